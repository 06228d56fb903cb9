package observe

import (
	"slices"
	"sync"
)

// Recorder is an Observer that keeps every Event, for tests.
type Recorder struct {
	mu     sync.Mutex
	events []Event
}

// Observe keeps e.
func (r *Recorder) Observe(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

// Events returns the Events kept so far, oldest first, those named one of names only
// when names are given.
func (r *Recorder) Events(names ...string) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	for _, e := range r.events {
		if len(names) == 0 || slices.Contains(names, e.Name) {
			out = append(out, e)
		}
	}
	return out
}

// Sum returns the sum of N over the Events named name whose Labels include every
// key-value pair of labels.
func (r *Recorder) Sum(name string, labels map[string]string) int64 {
	var n int64
	for _, e := range r.Events(name) {
		if hasLabels(e, labels) {
			n += e.N
		}
	}
	return n
}

// Count returns how many Events named name have every key-value pair of labels.
func (r *Recorder) Count(name string, labels map[string]string) int {
	n := 0
	for _, e := range r.Events(name) {
		if hasLabels(e, labels) {
			n++
		}
	}
	return n
}

func hasLabels(e Event, labels map[string]string) bool {
	for k, v := range labels {
		if e.Labels[k] != v {
			return false
		}
	}
	return true
}
