package pgsim_test

import (
	"testing"

	"github.com/commercekit/commercekit/internal/testkit"
	"github.com/commercekit/commercekit/payment/gatewaytest"
	"github.com/commercekit/commercekit/payment/pgsim"
)

// TestConformance: the simulator in process and its HTTP client both pass the Gateway suite.
func TestConformance(t *testing.T) {
	t.Run("InProcess", func(t *testing.T) {
		sim := testkit.Must(pgsim.New())(t)
		t.Cleanup(sim.Close)
		gatewaytest.Run(t, gatewaytest.Harness{Gateway: sim, DeclineToken: pgsim.TokenDecline, Charges: sim.Charges})
	})
	t.Run("HTTPClient", func(t *testing.T) {
		sim := testkit.Must(pgsim.New())(t)
		t.Cleanup(sim.Close)
		_, client := serve(t, sim)
		gatewaytest.Run(t, gatewaytest.Harness{Gateway: client(), DeclineToken: pgsim.TokenDecline, Charges: sim.Charges})
	})
}
