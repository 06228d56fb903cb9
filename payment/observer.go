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
}

// NopObserver does nothing; it is the default Observer.
type NopObserver struct{}

// Transitioned does nothing.
func (NopObserver) Transitioned(Transition) {}

// RefundSettled does nothing.
func (NopObserver) RefundSettled(Refund) {}
