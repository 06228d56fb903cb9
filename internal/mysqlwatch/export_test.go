package mysqlwatch

import "context"

// Prober is Run's state between probes.
type Prober = prober

// Step probes once, as Run does every Every.
func (w *Watch) Step(ctx context.Context, p *Prober) { w.step(ctx, p) }

// Close closes the probe's connection, as Run does when it ends.
func (p *prober) Close() { p.close() }
