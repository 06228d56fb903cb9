package main

import (
	"errors"
	"os"
	"runtime"
	"runtime/pprof"
)

// startProfiles starts a CPU profile into cpuFile and block profiling for blockFile (either
// may be empty); stop writes and closes them.
func startProfiles(cpuFile, blockFile string) (stop func() error, err error) {
	var cpu *os.File
	if cpuFile != "" {
		if cpu, err = os.Create(cpuFile); err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(cpu); err != nil {
			cpu.Close()
			return nil, err
		}
	}
	if blockFile != "" {
		runtime.SetBlockProfileRate(10_000) // one event per 10 µs blocked
	}
	return func() error {
		var errs []error
		if cpu != nil {
			pprof.StopCPUProfile()
			errs = append(errs, cpu.Close())
		}
		if blockFile != "" {
			f, err := os.Create(blockFile)
			if err != nil {
				return errors.Join(append(errs, err)...)
			}
			errs = append(errs, pprof.Lookup("block").WriteTo(f, 0), f.Close())
			runtime.SetBlockProfileRate(0)
		}
		return errors.Join(errs...)
	}, nil
}
