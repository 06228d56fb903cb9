package testenv

import (
	"errors"
	"strconv"
	"testing"

	"github.com/testcontainers/testcontainers-go"
)

// TestFreePortOutsideEphemeralRange: a port handed to a container of its own must not be one
// the kernel may give an outgoing connection while the container starts or is stopped for a
// fault (CI failed on "bind: address already in use" for such a port).
func TestFreePortOutsideEphemeralRange(t *testing.T) {
	low, _ := ephemeralRange()
	for range 20 {
		p, err := strconv.Atoi(freePort(t))
		if err != nil {
			t.Fatal(err)
		}
		if p >= low {
			t.Fatalf("freePort gave %d, inside the ephemeral range starting at %d", p, low)
		}
	}
}

// TestStartRetriesATakenPort: a start that lost its host port to another socket is tried
// again; any other failure is returned at once.
func TestStartRetriesATakenPort(t *testing.T) {
	taken := errors.New("Error starting userland proxy: listen tcp4 127.0.0.1:32823: bind: address already in use")
	calls := 0
	_, err := startRetrying(func() (testcontainers.Container, error) {
		calls++
		if calls < 3 {
			return nil, taken
		}
		return nil, nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("after two taken ports: err %v after %d calls, want success on the 3rd", err, calls)
	}

	other := errors.New("no such image")
	calls = 0
	_, err = startRetrying(func() (testcontainers.Container, error) { calls++; return nil, other })
	if !errors.Is(err, other) || calls != 1 {
		t.Fatalf("another failure: err %v after %d calls, want it after 1", err, calls)
	}

	calls = 0
	_, err = startRetrying(func() (testcontainers.Container, error) { calls++; return nil, taken })
	if !errors.Is(err, taken) || calls != portAttempts {
		t.Fatalf("ports always taken: err %v after %d calls, want it after %d", err, calls, portAttempts)
	}
}
