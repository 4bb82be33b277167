package app

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// TestSocketsLendOneSocket: the proxies of two configurations accept on one socket; the first
// one's loan closes and the second takes every connection after it; none is refused while
// loans change hands; once the socket is closed, connecting is refused and the loans yield
// nothing more but close cleanly.
func TestSocketsLendOneSocket(t *testing.T) {
	binds := 0
	s := NewSockets(func(addr string) (net.Listener, error) { binds++; return net.Listen("tcp", addr) })
	first, err := s.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if binds != 1 || first.Addr().String() != second.Addr().String() {
		t.Fatalf("%d binds, addresses %s and %s: want one socket", binds, first.Addr(), second.Addr())
	}
	addr := first.Addr().String()
	var byFirst, bySecond atomic.Int64
	serve := func(ln net.Listener, n *atomic.Int64) chan error {
		done := make(chan error, 1)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					done <- err
					return
				}
				n.Add(1)
				c.Close()
			}
		}()
		return done
	}
	firstDone, secondDone := serve(first, &byFirst), serve(second, &bySecond)
	dial := func(n int) (refused int) {
		for range n {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				refused++
				continue
			}
			buf := make([]byte, 1)
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _ = c.Read(buf) // the server closes it: accepted
			c.Close()
		}
		return refused
	}
	if r := dial(50); r != 0 {
		t.Fatalf("%d of 50 connections refused with two loans", r)
	}
	first.Close()
	if err := <-firstDone; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the closed loan's Accept: %v", err)
	}
	before := bySecond.Load()
	if r := dial(50); r != 0 {
		t.Fatalf("%d of 50 connections refused after the first loan closed", r)
	}
	if got := bySecond.Load() - before; got != 50 {
		t.Errorf("the remaining loan accepted %d of 50", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("a connection accepted after Sockets.Close")
	}
	select {
	case err := <-secondDone:
		t.Fatalf("a loan of a closed socket returned %v before it was closed itself", err)
	case <-time.After(50 * time.Millisecond):
	}
	second.Close()
	if err := <-secondDone; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after the loan closed: %v", err)
	}
}
