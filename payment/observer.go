package payment

// Observer is told what the Service did, after it is committed, so that a caller can count
// payments by outcome (e.g. with Prometheus) or react to a late settlement. Calls are made
// synchronously on the goroutine that made the change; keep them fast and do not call the
// Service from them. Embed NopObserver to implement only some methods.
type Observer interface {
	// Transitioned is called once per persisted transition, including the creation of a
	// payment (From empty) and every settlement by a webhook or the reconciler.
	Transitioned(t Transition)
	// RefundSettled is called once when a refund succeeds or fails.
	RefundSettled(r Refund)
	// Contradicted is called when the PG's own record contradicts a webhook's claim (cause
	// CauseWebhook: nothing was recorded from it) or the payment as recorded (the payment
	// moved to REVIEW by the cause that asked the PG). detail says how. Count it and alert:
	// either a person must decide, or someone holds the webhook secret.
	Contradicted(paymentID string, cause Cause, detail string)
}

// NopObserver does nothing; it is the default Observer.
type NopObserver struct{}

// Transitioned does nothing.
func (NopObserver) Transitioned(Transition) {}

// RefundSettled does nothing.
func (NopObserver) RefundSettled(Refund) {}

// Contradicted does nothing.
func (NopObserver) Contradicted(string, Cause, string) {}
