package app

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"
)

// Sockets holds the process's listening sockets and lends each to the proxy of every
// configuration in turn (proxy.Config.ListenFunc). During a reload two proxies accept on one
// socket: one acceptor per socket hands each connection to whichever is accepting, and a proxy
// that stops closes its loan only, never the socket, so no connection is refused in between.
type Sockets struct {
	bind func(addr string) (net.Listener, error)
	mu   sync.Mutex
	by   map[string]*socket
}

// NewSockets returns Sockets that bind each address once with bind (a socket inherited from the
// process this one replaces, one systemd passed, or a new one).
func NewSockets(bind func(addr string) (net.Listener, error)) *Sockets {
	return &Sockets{bind: bind, by: map[string]*socket{}}
}

// Listen lends the socket for addr, binding it the first time (proxy.Config.ListenFunc).
func (s *Sockets) Listen(_ context.Context, addr string) (net.Listener, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	so := s.by[addr]
	if so == nil {
		ln, err := s.bind(addr)
		if err != nil {
			return nil, err
		}
		so = &socket{ln: ln, conns: make(chan net.Conn), closing: make(chan struct{}), done: make(chan struct{})}
		go so.accept()
		s.by[addr] = so
	}
	return &loan{s: so, closed: make(chan struct{})}, nil
}

// Close closes every socket: the process accepts no more connections (those already accepted
// still reach a proxy that accepts).
func (s *Sockets) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for addr, so := range s.by {
		close(so.closing)
		errs = append(errs, so.ln.Close())
		delete(s.by, addr)
	}
	return errors.Join(errs...)
}

// socket is one listening socket and its acceptor.
type socket struct {
	ln      net.Listener
	conns   chan net.Conn // unbuffered: a connection waits in the acceptor, never in a queue
	closing chan struct{} // Sockets.Close
	done    chan struct{} // the acceptor has returned
}

func (so *socket) accept() {
	defer close(so.done)
	backoff := 5 * time.Millisecond
	for {
		c, err := so.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors and the like: as net/http does, wait and try again.
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		select {
		case so.conns <- c:
		case <-so.closing:
			// The process stops accepting; a proxy still running takes what was accepted.
			select {
			case so.conns <- c:
			case <-time.After(time.Second):
				c.Close()
			}
		}
	}
}

// loan is one proxy's use of a socket: closing it ends that proxy's accepting only.
type loan struct {
	s      *socket
	once   sync.Once
	closed chan struct{}
}

func (l *loan) Accept() (net.Conn, error) {
	select {
	case <-l.closed:
		return nil, net.ErrClosed
	default:
	}
	// A socket the process closed yields nothing more, without an error: the proxy is stopping
	// and closes its loan itself, and an error now would read as a failed listener.
	select {
	case c := <-l.s.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *loan) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *loan) Addr() net.Addr { return l.s.ln.Addr() }
