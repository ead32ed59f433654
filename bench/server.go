package main

import (
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// slowServer answers every request after a fixed delay and records when
// each one arrived, so that a rate limit is measured where it matters: at
// the server.
type slowServer struct {
	url   string
	delay time.Duration
	srv   *http.Server

	mu       sync.Mutex
	arrivals []time.Time
}

func startServer(delay time.Duration) (*slowServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &slowServer{url: "http://" + ln.Addr().String(), delay: delay}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go s.srv.Serve(ln)
	return s, nil
}

func (s *slowServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	s.mu.Lock()
	s.arrivals = append(s.arrivals, now)
	s.mu.Unlock()
	time.Sleep(s.delay)
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "ok %s\n", r.URL.Path)
}

func (s *slowServer) reset() {
	s.mu.Lock()
	s.arrivals = s.arrivals[:0]
	s.mu.Unlock()
}

func (s *slowServer) expect(n int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.arrivals) != n {
		return fmt.Errorf("the server got %d requests, want %d", len(s.arrivals), n)
	}
	return nil
}

// rate is requests per second between the first and the last arrival: the
// first request starts the clock, so n requests span n-1 intervals.
func (s *slowServer) rate() (float64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.arrivals)
	if n < 2 {
		return 0, fmt.Errorf("the server got %d requests: too few for a rate", n)
	}
	first, last := s.arrivals[0], s.arrivals[0]
	for _, t := range s.arrivals {
		if t.Before(first) {
			first = t
		}
		if t.After(last) {
			last = t
		}
	}
	return float64(n-1) / last.Sub(first).Seconds(), nil
}

func (s *slowServer) close() { s.srv.Close() }
