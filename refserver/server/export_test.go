package server

// WriteLimitStats returns how s's write limiter answered so far: the calls that asked
// Redis and waited for it, those Redis did not answer (in time), and those this process's
// own bucket answered.
func WriteLimitStats(s *Server) (asked, unanswered, local int64) {
	st := &s.limiter.stats
	return st.asked.Load(), st.unanswered.Load(), st.local.Load()
}

// SettleWriteLimit waits until no Redis call of s's write limiter is still running.
func SettleWriteLimit(s *Server) { s.limiter.settle() }

// WriteLimitCooldown is how long the write limiter leaves Redis alone after it failed to
// answer in time.
const WriteLimitCooldown = rateLimitCooldown
