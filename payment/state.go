package payment

import (
	"slices"
	"time"
)

// State is where a payment is in its life:
//
//	REQUESTED ──> APPROVED ──> PARTIALLY_REFUNDED ──> REFUNDED
//	    │ │ │        ^   └──────────────────────────────^
//	    │ │ └──> DECLINED
//	    │ └──> UNKNOWN ──> APPROVED | DECLINED   (reconciliation)
//	    └──> ABANDONED ──> APPROVED | DECLINED   (only if the PG says so after all)
//
//	any other state ──> REVIEW                   (the PG contradicts the record)
//
// REQUESTED is recorded before the PG is called; UNKNOWN means a call was made but its answer
// was not received. ABANDONED is a payment given up because the PG was certainly not reached
// (Service.Attempt): nothing was charged and nothing submits it again (it is final for
// Submit, Pay and the Reconciler), so its ID is never sent to the PG again; the caller pays
// with a new payment ID. Should the PG report it approved or declined all the same (a
// webhook, Gateway.Status), that is the PG's truth and is recorded; an approval with the
// refund of all of it (nothing fulfils an abandoned payment). REVIEW is final for the
// Service: the PG's own answer contradicted what was recorded (approved here, declined
// there; declined here, approved there; another amount), so a person must decide; nothing
// settles it automatically (ResolveReview, called by that person, takes the PG's record and
// gives back what it holds), and an order must never be completed on it. Every state is
// entered at most once.
type State string

// The states of a payment.
const (
	StateRequested         State = "REQUESTED"
	StateApproved          State = "APPROVED"
	StateDeclined          State = "DECLINED"
	StateUnknown           State = "UNKNOWN"
	StatePartiallyRefunded State = "PARTIALLY_REFUNDED"
	StateRefunded          State = "REFUNDED"
	// StateAbandoned: given up before the PG was reached (Service.Attempt); nothing charged.
	StateAbandoned State = "ABANDONED"
	// StateReview: the PG's own answer contradicts the record; a person must decide.
	StateReview State = "REVIEW"
)

// next returns the legal moves out of s.
func (s State) next() []State {
	switch s {
	case StateRequested:
		return []State{StateApproved, StateDeclined, StateUnknown, StateAbandoned, StateReview}
	case StateUnknown, StateAbandoned:
		return []State{StateApproved, StateDeclined, StateReview}
	case StateApproved:
		return []State{StatePartiallyRefunded, StateRefunded, StateReview}
	case StatePartiallyRefunded:
		return []State{StateRefunded, StateReview}
	case StateDeclined, StateRefunded:
		return []State{StateReview}
	}
	return nil
}

// Valid reports whether s is one of the states above.
func (s State) Valid() bool {
	switch s {
	case StateRequested, StateApproved, StateDeclined, StateUnknown, StateAbandoned, StatePartiallyRefunded, StateRefunded, StateReview:
		return true
	}
	return false
}

// CanTransitionTo reports whether the state machine allows moving from s to to in one step.
func (s State) CanTransitionTo(to State) bool {
	return slices.Contains(s.next(), to)
}

// Reaches reports whether a payment in state s can get to state to in zero or more steps.
// A payment already in a state that target reaches needs no move to target: a late "approved"
// for a refunded payment, or a timeout for one a webhook has already settled, changes nothing.
func (s State) Reaches(to State) bool {
	if s == to {
		return true
	}
	for _, n := range s.next() {
		if n.Reaches(to) {
			return true
		}
	}
	return false
}

// Settled reports whether the PG's answer is recorded (APPROVED, DECLINED, a refund state, or
// REVIEW when its answers contradict each other) or the payment was ABANDONED: nothing
// submits it again.
func (s State) Settled() bool { return s != StateRequested && s != StateUnknown }

// Cause says what made a transition.
type Cause string

// The causes of transitions.
const (
	// CauseCreated: the payment was recorded (the transition into REQUESTED).
	CauseCreated Cause = "created"
	// CauseGateway: the PG's answer to our call.
	CauseGateway Cause = "gateway"
	// CauseNoAnswer: a call to the PG went unanswered (timeout, lost response).
	CauseNoAnswer Cause = "no_answer"
	// CauseWebhook: a verified webhook from the PG.
	CauseWebhook Cause = "webhook"
	// CauseReconciler: the reconciler asked the PG.
	CauseReconciler Cause = "reconciler"
	// CauseRefund: a refund succeeded.
	CauseRefund Cause = "refund"
	// CauseAbandoned: the PG was not reached and the caller gave the payment up.
	CauseAbandoned Cause = "abandoned"
	// CauseResolved: Service.ResolveReview took the PG's record of a payment in REVIEW.
	CauseResolved Cause = "resolved"
)

// Transition is one persisted move of a payment's state machine.
type Transition struct {
	PaymentID string
	// From is empty for the creation of the payment.
	From   State
	To     State
	Cause  Cause
	Detail string
	At     time.Time
}
