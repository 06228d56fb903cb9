package payment

import "github.com/commercekit/commercekit/observe"

// Observer is told what the Service did, after it is committed, so that a caller can count
// payments by outcome (e.g. with Prometheus) or react to a late settlement: the one shape
// every package shares. Its Events have Component "payment" and Name
//
//   - "transition": once per persisted transition, including the creation of a payment
//     ("from" empty) and every settlement by a webhook or the reconciler; Labels
//     "payment_id", "from", "to", "cause", "detail".
//   - "refund_settled": once when a refund succeeds or fails; N its amount, Labels
//     "refund_id", "payment_id", "state".
//   - "contradiction": the PG's own record contradicts a webhook's claim (cause "webhook":
//     nothing was recorded from it) or the payment as recorded (the payment moved to REVIEW
//     by the cause that asked the PG); Labels "payment_id", "cause", "detail" (how). Count
//     it and alert: either a person must decide, or someone holds the webhook secret.
//
// A change whose COMMIT ran but whose answer was lost (the connection cut) is looked for
// at once and, found, told like any other; one whose outcome cannot be read then (the
// database down) is not told, though it persisted: count from the record (Transitions,
// CrossCheck) where every one matters.
//
// Calls are made synchronously on the goroutine that made the change; keep them fast and
// do not call the Service from them.
type Observer = observe.Observer

func (s *Service) transitioned(t Transition) {
	s.observer.Observe(observe.Event{Component: "payment", Name: "transition", Labels: map[string]string{
		"payment_id": t.PaymentID, "from": string(t.From), "to": string(t.To), "cause": string(t.Cause), "detail": t.Detail,
	}})
}

func (s *Service) refundSettled(r Refund) {
	s.observer.Observe(observe.Event{Component: "payment", Name: "refund_settled", N: r.Amount, Labels: map[string]string{
		"refund_id": r.ID, "payment_id": r.PaymentID, "state": string(r.State),
	}})
}

func (s *Service) contradicted(paymentID string, cause Cause, detail string) {
	s.observer.Observe(observe.Event{Component: "payment", Name: "contradiction", Labels: map[string]string{
		"payment_id": paymentID, "cause": string(cause), "detail": detail,
	}})
}
