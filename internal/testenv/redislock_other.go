//go:build !unix

package testenv

// lockRedisDB: without flock, tests of packages running at once may both take an empty
// database of an external Redis; run them with -p 1 there.
func lockRedisDB(string, int) (unlock func(), ok bool) { return func() {}, true }
