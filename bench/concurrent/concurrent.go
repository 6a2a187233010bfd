// Package concurrent releases calls at once and measures when they complete,
// for the benchmarks' "N at once" phases.
package concurrent

import (
	"sync"
	"time"
)

// Result is what Run measured.
type Result struct {
	Latency []time.Duration // each call's, by index
	Total   time.Duration   // from the release until the last completion
	Spread  time.Duration   // from the first completion until the last
}

// Run calls call(i) for each i < n, in n goroutines released together. It
// fails with the error (as it is) of the lowest-numbered call that failed.
func Run(n int, call func(i int) error) (Result, error) {
	var (
		wg   sync.WaitGroup
		gate = make(chan struct{})
		ends = make([]time.Time, n)
		errs = make([]error, n)
		lat  = make([]time.Duration, n)
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-gate
			s := time.Now()
			errs[i] = call(i)
			ends[i] = time.Now()
			lat[i] = ends[i].Sub(s)
		}(i)
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return Result{}, err
		}
	}
	if n == 0 {
		return Result{}, nil
	}
	first, last := ends[0], ends[0]
	for _, e := range ends {
		if e.Before(first) {
			first = e
		}
		if e.After(last) {
			last = e
		}
	}
	return Result{Latency: lat, Total: last.Sub(start), Spread: last.Sub(first)}, nil
}
