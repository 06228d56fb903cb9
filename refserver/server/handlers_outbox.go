package server

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/commercekit/commercekit/outbox"
)

// DeadLetterJSON is an event the outbox relay set aside because the publisher can never
// take it (too large for the broker, say); the events after it in its stream wait until an
// admin redrives or skips it.
type DeadLetterJSON struct {
	ID         string    `json:"id"`
	Topic      string    `json:"topic"`
	Key        string    `json:"key"`
	Seq        int64     `json:"seq"`
	Type       string    `json:"type"`
	Error      string    `json:"error"`
	SetAsideAt time.Time `json:"set_aside_at"`
}

// DeadLetterPageJSON lists the relay's dead letters, oldest first.
type DeadLetterPageJSON struct {
	DeadLetters []DeadLetterJSON `json:"dead_letters"`
}

// maxDeadLetters bounds one listing.
const maxDeadLetters = 500

func (s *Server) relayDeadLetters(w http.ResponseWriter, r *http.Request) {
	dls, err := s.st.relay.DeadLetterSummaries(r.Context(), maxDeadLetters)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := DeadLetterPageJSON{DeadLetters: make([]DeadLetterJSON, len(dls))}
	for i, d := range dls {
		out.DeadLetters[i] = DeadLetterJSON{ID: d.ID, Topic: d.Topic, Key: d.Key, Seq: d.Seq, Type: d.Type, Error: d.Error, SetAsideAt: d.At}
	}
	writeJSON(w, http.StatusOK, out)
}

// resolveDeadLetter answers POST .../{id}/redrive (skip false) and .../{id}/skip: 204,
// also for a dead letter already resolved the same way (a resolution sent again after its
// answer was lost); 409 dead_letter_resolved for one resolved the other way; 404
// not_dead_letter for an ID that was never a dead letter of the relay. The relay keeps
// each resolution for good, so the answers stay the same after the cleaner's retention.
func (s *Server) resolveDeadLetter(skip bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		resolve := s.st.relay.Redrive
		if skip {
			resolve = s.st.relay.Skip
		}
		s.writeResolution(w, r, resolve)
	}
}

// skipConsumerLetter answers POST /v1/admin/consumers/{name}/dead-letters/{id}/skip: the
// consumer gives up on its dead letter for good (outbox.Consumer.Skip: the event recorded
// as processed, so that the broker delivering it again does not apply it). 204, also for
// a letter already skipped; 409 dead_letter_resolved for an event the consumer applied
// (redriven, or delivered again); 404 not_dead_letter for an ID that is neither. Skips are
// kept for good, so the answers stay the same after the cleaner's retention.
func (s *Server) skipConsumerLetter(w http.ResponseWriter, r *http.Request) {
	c, ok := s.consumerNamed(w, r)
	if !ok {
		return
	}
	s.writeResolution(w, r, c.Skip)
}

// writeResolution resolves the dead letter the path's {id} names with resolve and
// answers as resolveDeadLetter says.
func (s *Server) writeResolution(w http.ResponseWriter, r *http.Request, resolve func(context.Context, string) error) {
	id := r.PathValue("id")
	err := outbox.ErrNotDeadLetter // no dead letter's ID holds a NUL
	if !containsNUL(id) {
		err = resolve(r.Context(), id)
	}
	switch {
	case errors.Is(err, outbox.ErrNotDeadLetter):
		writeProblem(w, r, newProblem(http.StatusNotFound, "not_dead_letter", "Not Found",
			"no dead letter has this ID here (unknown, or never set aside)"))
	case errors.Is(err, outbox.ErrResolvedOtherwise):
		writeProblem(w, r, newProblem(http.StatusConflict, "dead_letter_resolved", "Conflict",
			"this dead letter was resolved the other way already (redriven or applied, or skipped)"))
	case err != nil:
		s.writeError(w, r, err)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// ConsumerDeadLetterJSON is an event an outbox consumer of the server gave up on: its
// handler failed at every attempt or refused it for good (a payload it cannot read, say).
// Nothing waits behind it; the consumer applies it when an admin redrives it.
type ConsumerDeadLetterJSON struct {
	DeadLetterJSON
	// Attempts is how many times the event was tried on its own (0: never, e.g. it had no
	// valid ID).
	Attempts int `json:"attempts"`
	// Altered says what was changed in an event that could not be stored as it came (a
	// foreign producer's); a redrive leaves such a letter alone.
	Altered string `json:"altered,omitempty"`
}

// ConsumerDeadLetterPageJSON lists a consumer's dead letters, oldest first.
type ConsumerDeadLetterPageJSON struct {
	Consumer    string                   `json:"consumer"`
	DeadLetters []ConsumerDeadLetterJSON `json:"dead_letters"`
}

// ConsumerJSON is one of the server's outbox consumers, by the name its dead-letter routes
// take.
type ConsumerJSON struct {
	Name string `json:"name"`
	// DeadLetters is how many dead letters it holds.
	DeadLetters int `json:"dead_letters"`
}

// ConsumerListJSON lists the server's outbox consumers, by name.
type ConsumerListJSON struct {
	Consumers []ConsumerJSON `json:"consumers"`
}

// consumerList answers GET /v1/admin/consumers: the consumers this process runs, sorted by
// name, each with its number of dead letters.
func (s *Server) consumerList(w http.ResponseWriter, r *http.Request) {
	names := make([]string, len(s.st.consumers))
	for i, c := range s.st.consumers {
		names[i] = c.Name()
	}
	slices.Sort(names)
	// The server's consumers keep their dead letters in the default DeadLetterTable.
	counts, err := outbox.NewDeadLetterTable(s.st.db).Counts(r.Context(), names...)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := ConsumerListJSON{Consumers: make([]ConsumerJSON, len(names))}
	for i, n := range names {
		out.Consumers[i] = ConsumerJSON{Name: n, DeadLetters: counts[n]}
	}
	writeJSON(w, http.StatusOK, out)
}

// RedriveJSON is the outcome of a redrive of a consumer's dead letters.
type RedriveJSON struct {
	// Applied is how many letters the consumer applied, which left its dead letters.
	Applied int `json:"applied"`
}

// consumerDeadLetters answers GET /v1/admin/consumers/{name}/dead-letters?limit=N: up to N
// (1..500, default 500) dead letters of the consumer, oldest first, read without their
// payloads.
func (s *Server) consumerDeadLetters(w http.ResponseWriter, r *http.Request) {
	c, limit, ok := s.consumerRequest(w, r)
	if !ok {
		return
	}
	// The server's consumers keep their dead letters in the default DeadLetterTable.
	dls, err := outbox.NewDeadLetterTable(s.st.db).Summaries(r.Context(), c.Name(), limit)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := ConsumerDeadLetterPageJSON{Consumer: c.Name(), DeadLetters: make([]ConsumerDeadLetterJSON, len(dls))}
	for i, d := range dls {
		out.DeadLetters[i] = ConsumerDeadLetterJSON{
			DeadLetterJSON: DeadLetterJSON{ID: d.ID, Topic: d.Topic, Key: d.Key, Seq: d.Seq, Type: d.Type, Error: d.Error, SetAsideAt: d.At},
			Attempts:       d.Attempts, Altered: d.Altered,
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// redriveConsumer answers POST /v1/admin/consumers/{name}/dead-letters/redrive?limit=N:
// the consumer delivers up to N (1..500, default 500) of its dead letters again, oldest
// first (outbox.Consumer.Redrive), and the answer says how many it applied. A letter
// applied leaves the listing; one that fails again is dead-lettered anew and stays, as
// does one stored altered. Sent again, it applies what is left: an event is applied once
// whatever the redrives. A redrive cut short by the request timeout answers 503; what it
// applied stays applied.
func (s *Server) redriveConsumer(w http.ResponseWriter, r *http.Request) {
	c, limit, ok := s.consumerRequest(w, r)
	if !ok {
		return
	}
	applied, err := c.Redrive(r.Context(), limit)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, RedriveJSON{Applied: applied})
}

// consumerRequest returns the consumer the path names and the request's limit, or answers
// 404 consumer_not_found for a name that is not one of the consumers this process runs
// (a `refserver collector` process's collector is not), or 400 for a bad limit.
func (s *Server) consumerRequest(w http.ResponseWriter, r *http.Request) (*outbox.Consumer, int, bool) {
	c, ok := s.consumerNamed(w, r)
	if !ok {
		return nil, 0, false
	}
	limit, err := limitParam(r.URL.Query(), maxDeadLetters, maxDeadLetters)
	if err != nil {
		s.writeError(w, r, err)
		return nil, 0, false
	}
	return c, limit, true
}

// consumerNamed returns the consumer the path's {name} names, or answers 404
// consumer_not_found.
func (s *Server) consumerNamed(w http.ResponseWriter, r *http.Request) (*outbox.Consumer, bool) {
	name := r.PathValue("name")
	i := slices.IndexFunc(s.st.consumers, func(c *outbox.Consumer) bool { return c.Name() == name })
	if i < 0 {
		writeProblem(w, r, newProblem(http.StatusNotFound, "consumer_not_found", "Not Found",
			"this server runs no outbox consumer named "+strconv.Quote(name)))
		return nil, false
	}
	return s.st.consumers[i], true
}
