package server

import (
	"errors"
	"net/http"
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
		id := r.PathValue("id")
		err := outbox.ErrNotDeadLetter // no dead letter's ID holds a NUL
		if !containsNUL(id) {
			err = resolve(r.Context(), id)
		}
		switch {
		case errors.Is(err, outbox.ErrNotDeadLetter):
			writeProblem(w, r, newProblem(http.StatusNotFound, "not_dead_letter", "Not Found",
				"no dead letter of the relay has this ID (unknown, or never set aside)"))
		case errors.Is(err, outbox.ErrResolvedOtherwise):
			writeProblem(w, r, newProblem(http.StatusConflict, "dead_letter_resolved", "Conflict",
				"this dead letter was resolved the other way already (redriven, or skipped)"))
		case err != nil:
			s.writeError(w, r, err)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}
}
