package resilient_test

import (
	"testing"

	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/payment/gatewaytest"
	"github.com/commercekit/commercekit/payment/pgsim"
	"github.com/commercekit/commercekit/payment/resilient"
)

// TestConformance: the policies change nothing the Gateway suite checks.
func TestConformance(t *testing.T) {
	sim := newSim(t)
	gatewaytest.Run(t, gatewaytest.Harness{Gateway: testkit.Must(resilient.Wrap(sim, fast))(t), DeclineToken: pgsim.TokenDecline, Charges: sim.Charges})
}
