package server

import (
	"net/http"
	"net/http/pprof"
	"runtime"
)

// pprofRoute serves net/http/pprof to admin tokens when Config.Pprof is on, and turns on the
// block and mutex profiles (sampling one blocking event per 10 µs blocked and one mutex
// contention in 5), which the flash-sale profile of issue 16 needs. Profiles longer than
// the request timeout are cut short by it: ask for ?seconds= below Config.RequestTimeout.
//
//	curl -H "Authorization: Bearer $(refserver token -sub ops -admin)" \
//	    'http://127.0.0.1:8080/debug/pprof/profile?seconds=20' > cpu.pprof
func (s *Server) pprofRoute() Route {
	runtime.SetBlockProfileRate(10_000)
	runtime.SetMutexProfileFraction(5)
	return Route{Method: http.MethodGet, Path: "/debug/pprof/{name...}", Auth: AuthAdmin, Handler: func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("name") {
		case "profile":
			pprof.Profile(w, r)
		case "trace":
			pprof.Trace(w, r)
		case "symbol":
			pprof.Symbol(w, r)
		case "cmdline":
			pprof.Cmdline(w, r)
		default:
			pprof.Index(w, r) // the index page and every named profile (heap, block, mutex, ...)
		}
	}}
}
