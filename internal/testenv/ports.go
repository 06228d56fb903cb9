package testenv

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
)

// portAttempts is how many times a container is started when its host port turns out taken.
const portAttempts = 4

// ephemeralRange returns the kernel's range of ports for outgoing connections (Linux's
// default when it cannot be read).
func ephemeralRange() (low, high int) {
	low, high = 32768, 60999
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return low, high
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return low, high
	}
	l, err1 := strconv.Atoi(f[0])
	h, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return low, high
	}
	return l, h
}

// freePort returns a TCP port on loopback that was free a moment ago. It is taken below the
// kernel's ephemeral range: a port from that range can be given to an outgoing connection
// (the suite makes thousands) between this check and the container's bind, or while a test
// has the container stopped; one below it can only be taken by another listener.
func freePort(tb testing.TB) string {
	tb.Helper()
	const lowest = 10000 // above the well-known and most registered servers' ports
	low, _ := ephemeralRange()
	for range 100 {
		if low <= lowest {
			break
		}
		port := strconv.Itoa(lowest + rand.IntN(low-lowest))
		if ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port)); err == nil {
			ln.Close()
			return port
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("testenv: finding a free port: %v", err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// startRetrying calls start until it does not fail because a host port was taken between
// being chosen (by freePort, or by Docker from the ephemeral range) and being bound, at most
// portAttempts times. A container left by a failed attempt is removed.
func startRetrying(start func() (testcontainers.Container, error)) (testcontainers.Container, error) {
	for attempt := 1; ; attempt++ {
		c, err := start()
		if err == nil || attempt == portAttempts || !portTaken(err) {
			return c, err
		}
		if c != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if terr := c.Terminate(ctx); terr != nil {
				cancel()
				return nil, fmt.Errorf("%w (and removing its container: %v)", err, terr)
			}
			cancel()
		}
	}
}

// portTaken tells whether err is Docker failing to bind a container's host port.
func portTaken(err error) bool {
	s := err.Error()
	return strings.Contains(s, "address already in use") || strings.Contains(s, "port is already allocated")
}
