package fleet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/xksproxy/xksproxy/cutover"
)

// maxTxnOps stays under etcd's default --max-txn-ops (128) with room for the fence and header.
const maxTxnOps = 120

// reconnectMax bounds the wait between two attempts to reach an unreachable etcd.
const reconnectMax = 2 * time.Second

// pageSize bounds one range read of per-key records (each well under 1 KiB).
const pageSize = 1000

// Etcd is the etcd v3 Store.
type Etcd struct {
	cfg Config
	cli *clientv3.Client
	pfx string

	baseCtx context.Context
	cancel  context.CancelFunc

	mu         sync.Mutex
	sess       *concurrency.Session
	leaderKey  string // this member's election key while it leads
	leaderRev  int64  // its create revision: the fencing token
	registered uint64 // epoch last written to registry/<name> (+1; 0 = never)

	loadRev   atomic.Int64 // store revision of the last Load; Watch starts after it
	reachable atomic.Bool
}

var _ Store = (*Etcd)(nil)

// Open connects to etcd. It does not wait for etcd to answer: a replica that starts while etcd
// is unreachable serves its last applied epoch (see cutover) and the calls fail until it is back.
func Open(cfg Config) (*Etcd, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	tc, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    cfg.LeaseTTL / 2,
		DialKeepAliveTimeout: cfg.RequestTimeout,
		TLS:                  tc,
		Username:             cfg.Username,
		Password:             cfg.Password,
		Logger:               zap.NewNop(),
		AutoSyncInterval:     0,
		RejectOldCluster:     false,
		PermitWithoutStream:  true,
		// gRPC's default reconnect backoff grows to 2 minutes: replicas started while etcd was
		// down for a minute would try again up to a minute after it came back. Capped, they are
		// ready within seconds of etcd answering.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: reconnectMax},
			MinConnectTimeout: cfg.DialTimeout,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("fleet: etcd client: %w", err)
	}
	e := &Etcd{cfg: cfg, cli: cli, pfx: cfg.KeyPrefix}
	e.baseCtx, e.cancel = context.WithCancel(context.Background())
	return e, nil
}

func (c *Config) tlsConfig() (*tls.Config, error) {
	if c.CAFile == "" && c.CertFile == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("fleet: ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("fleet: ca_file %s: no PEM certificate", c.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("fleet: cert_file/key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Close resigns the lead, revokes the lease (the member record goes at once; its
// registration stays) and closes the client.
func (e *Etcd) Close() error {
	e.mu.Lock()
	s := e.sess
	e.sess, e.leaderKey, e.leaderRev = nil, "", 0
	e.mu.Unlock()
	if s != nil {
		ctx, cancel := context.WithTimeout(context.Background(), e.cfg.RequestTimeout)
		_, _ = e.cli.Revoke(ctx, s.Lease())
		cancel()
		s.Orphan()
	}
	e.cancel()
	return e.cli.Close()
}

// Member implements cutover.Fleet.
func (e *Etcd) Member() string { return e.cfg.Member }

// Where implements cutover.Storage.
func (e *Etcd) Where() string { return "etcd " + e.pfx }

// Reachable implements Store.
func (e *Etcd) Reachable() bool { return e.reachable.Load() }

// call bounds one etcd request and records reachability.
func (e *Etcd) call(ctx context.Context, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.RequestTimeout)
	defer cancel()
	err := f(ctx)
	if err != nil && !errors.Is(err, cutover.ErrFenced) && !errors.Is(err, cutover.ErrMemberAlive) && !errors.Is(err, cutover.ErrUnknownMember) {
		e.reachable.Store(false)
		return fmt.Errorf("fleet: etcd: %w", err)
	}
	e.reachable.Store(true)
	return err
}

// session returns the member's live lease session, granting a new lease when the last one
// expired.
func (e *Etcd) session(ctx context.Context) (*concurrency.Session, error) {
	e.mu.Lock()
	s := e.sess
	e.mu.Unlock()
	if s != nil {
		select {
		case <-s.Done():
		default:
			return s, nil
		}
	}
	var id clientv3.LeaseID
	err := e.call(ctx, func(ctx context.Context) error {
		r, err := e.cli.Grant(ctx, int64((e.cfg.LeaseTTL+time.Second-1)/time.Second))
		if err == nil {
			id = r.ID
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	ns, err := concurrency.NewSession(e.cli, concurrency.WithLease(id), concurrency.WithContext(e.baseCtx))
	if err != nil {
		return nil, fmt.Errorf("fleet: etcd session: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.sess != nil && e.sess != s {
		// Another caller won the race; keep its session.
		ns.Orphan()
		return e.sess, nil
	}
	e.sess, e.leaderKey, e.leaderRev = ns, "", 0
	return ns, nil
}

// Campaign implements cutover.Fleet.
func (e *Etcd) Campaign(ctx context.Context) (context.Context, error) {
	s, err := e.session(ctx)
	if err != nil {
		return nil, err
	}
	el := concurrency.NewElection(s, e.pfx+"election")
	// The lead ends with the session: a member that cannot renew its lease stops driving
	// before another is elected.
	cctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-s.Done():
			cancel()
		case <-cctx.Done():
		}
	}()
	done := make(chan error, 1)
	go func() { done <- el.Campaign(cctx, e.cfg.Member) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		// Canceled, etcd's Campaign resigns with the client's own context, which waits for as
		// long as etcd is unreachable: a replica cut off from etcd never finished stopping. That
		// call ends when Close closes the client.
		cancel()
		return nil, ctx.Err()
	}
	if err != nil {
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		e.reachable.Store(false)
		return nil, fmt.Errorf("fleet: campaign: %w", err)
	}
	e.reachable.Store(true)
	e.mu.Lock()
	e.leaderKey, e.leaderRev = el.Key(), el.Rev()
	e.mu.Unlock()
	e.cfg.Logger.Info("fleet: elected driver", "member", e.cfg.Member, "fence", el.Rev())
	context.AfterFunc(cctx, func() {
		e.mu.Lock()
		if e.leaderKey == el.Key() {
			e.leaderKey, e.leaderRev = "", 0
		}
		e.mu.Unlock()
		rctx, rcancel := context.WithTimeout(context.Background(), e.cfg.RequestTimeout)
		_ = el.Resign(rctx)
		rcancel()
	})
	return cctx, nil
}

// fence is the comparison every driver write carries: this member's election key still has
// the create revision it won with, and the stored epoch is still the one the writer holds.
func (e *Etcd) fence(prevEpoch uint64) ([]clientv3.Cmp, error) {
	e.mu.Lock()
	key, rev := e.leaderKey, e.leaderRev
	e.mu.Unlock()
	if key == "" {
		return nil, cutover.ErrFenced
	}
	return []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(key), "=", rev),
		clientv3.Compare(clientv3.Value(e.pfx+"epoch"), "=", strconv.FormatUint(prevEpoch, 10)),
	}, nil
}

// Save implements cutover.Storage.
func (e *Etcd) Save(ctx context.Context, ch cutover.Change) error {
	// Created notes first, unfenced: any member may report a CreateKey, and a note is
	// idempotent (same id, same side).
	var notes []clientv3.Op
	for _, n := range ch.Created {
		v, err := json.Marshal(n)
		if err != nil {
			return err
		}
		notes = append(notes, clientv3.OpPut(e.pfx+"created/"+n.ID, string(v)))
	}
	if !ch.ResetKeys && ch.Header == nil && len(ch.Keys) == 0 {
		return e.batches(ctx, nil, notes, nil)
	}
	if ch.PrevEpoch == 0 && ch.Header != nil {
		// The very first header: created if absent, by whichever member gets there first.
		return e.create(ctx, ch)
	}
	cmp, err := e.fence(ch.PrevEpoch)
	if err != nil {
		return err
	}
	var keyOps []clientv3.Op
	for id, k := range ch.Keys {
		if k == nil {
			keyOps = append(keyOps, clientv3.OpDelete(e.pfx+"keys/"+id))
			continue
		}
		v, err := json.Marshal(k)
		if err != nil {
			return err
		}
		keyOps = append(keyOps, clientv3.OpPut(e.pfx+"keys/"+id, string(v)))
	}
	var last []clientv3.Op
	if ch.ResetKeys {
		// Reset and the new header in one transaction: a new migration never sees the
		// previous one's records.
		last = append(last, clientv3.OpDelete(e.pfx+"keys/", clientv3.WithPrefix()),
			clientv3.OpDelete(e.pfx+"created/", clientv3.WithPrefix()))
	}
	if ch.Header != nil {
		hv, err := json.Marshal(ch.Header)
		if err != nil {
			return err
		}
		last = append(last, clientv3.OpPut(e.pfx+"header", string(hv)),
			clientv3.OpPut(e.pfx+"epoch", strconv.FormatUint(ch.Header.Epoch, 10)))
	}
	if ch.ResetKeys {
		// Records of the new migration go after the reset.
		if err := e.batches(ctx, cmp, nil, last); err != nil {
			return err
		}
		if ch.Header != nil {
			cmp, _ = e.fence(ch.Header.Epoch)
		}
		last = nil
	}
	if err := e.batches(ctx, cmp, keyOps, last); err != nil {
		return err
	}
	return e.batches(ctx, nil, notes, nil)
}

// batches writes ops in transactions of at most maxTxnOps, each guarded by cmp, then last
// (which must fit one transaction) in a final one.
func (e *Etcd) batches(ctx context.Context, cmp []clientv3.Cmp, ops, last []clientv3.Op) error {
	for len(ops) > 0 || len(last) > 0 {
		var b []clientv3.Op
		if len(ops) > 0 {
			n := min(len(ops), maxTxnOps)
			b, ops = ops[:n], ops[n:]
		}
		if len(ops) == 0 && len(b)+len(last) <= maxTxnOps {
			b = append(b, last...)
			last = nil
		}
		err := e.call(ctx, func(ctx context.Context) error {
			r, err := e.cli.Txn(ctx).If(cmp...).Then(b...).Commit()
			if err != nil {
				return err
			}
			if !r.Succeeded {
				return cutover.ErrFenced
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (e *Etcd) create(ctx context.Context, ch cutover.Change) error {
	hv, err := json.Marshal(ch.Header)
	if err != nil {
		return err
	}
	return e.call(ctx, func(ctx context.Context) error {
		r, err := e.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(e.pfx+"epoch"), "=", 0)).
			Then(clientv3.OpPut(e.pfx+"header", string(hv)),
				clientv3.OpPut(e.pfx+"epoch", strconv.FormatUint(ch.Header.Epoch, 10))).
			Commit()
		if err != nil {
			return err
		}
		if !r.Succeeded {
			return cutover.ErrFenced
		}
		return nil
	})
}

// Load implements cutover.Storage: the header, every key record and every created note, read
// at one revision in pages.
func (e *Etcd) Load(ctx context.Context) (*cutover.Snapshot, error) {
	var hdr *clientv3.GetResponse
	err := e.call(ctx, func(ctx context.Context) (err error) {
		hdr, err = e.cli.Get(ctx, e.pfx+"header")
		return err
	})
	if err != nil {
		return nil, err
	}
	rev := hdr.Header.Revision
	if len(hdr.Kvs) == 0 {
		e.loadRev.Store(rev)
		return nil, nil
	}
	snap := &cutover.Snapshot{Keys: map[string]*cutover.KeyProgress{}}
	if err := json.Unmarshal(hdr.Kvs[0].Value, &snap.Header); err != nil {
		return nil, fmt.Errorf("fleet: %sheader: corrupt: %v", e.pfx, err)
	}
	err = e.scan(ctx, "keys/", rev, func(id string, v []byte) error {
		k := new(cutover.KeyProgress)
		if err := json.Unmarshal(v, k); err != nil {
			return fmt.Errorf("fleet: %skeys/%s: corrupt: %v", e.pfx, id, err)
		}
		snap.Keys[id] = k
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = e.scan(ctx, "created/", rev, func(id string, v []byte) error {
		var n cutover.CreatedKey
		if err := json.Unmarshal(v, &n); err != nil {
			return fmt.Errorf("fleet: %screated/%s: corrupt: %v", e.pfx, id, err)
		}
		snap.Created = append(snap.Created, n)
		return nil
	})
	if err != nil {
		return nil, err
	}
	e.loadRev.Store(rev)
	return snap, nil
}

// scan reads every key under pfx+sub at rev, pageSize at a time.
func (e *Etcd) scan(ctx context.Context, sub string, rev int64, fn func(id string, v []byte) error) error {
	base := e.pfx + sub
	end := clientv3.GetPrefixRangeEnd(base)
	from := base
	for {
		var r *clientv3.GetResponse
		err := e.call(ctx, func(ctx context.Context) (err error) {
			r, err = e.cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithRev(rev),
				clientv3.WithLimit(pageSize), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
			return err
		})
		if err != nil {
			return err
		}
		for _, kv := range r.Kvs {
			if err := fn(strings.TrimPrefix(string(kv.Key), base), kv.Value); err != nil {
				return err
			}
		}
		if !r.More || len(r.Kvs) == 0 {
			return nil
		}
		from = string(r.Kvs[len(r.Kvs)-1].Key) + "\x00"
	}
}

// Watch implements cutover.Fleet.
func (e *Etcd) Watch(ctx context.Context, fn func(cutover.WatchEvent)) {
	for ctx.Err() == nil {
		rev := e.loadRev.Load() + 1
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wc := e.cli.Watch(wctx, e.pfx, clientv3.WithPrefix(), clientv3.WithRev(rev))
		gap := false
		for resp := range wc {
			if err := resp.Err(); err != nil {
				gap = true
				break
			}
			for _, ev := range resp.Events {
				key := strings.TrimPrefix(string(ev.Kv.Key), e.pfx)
				if ev.Type != clientv3.EventTypePut {
					if id, ok := strings.CutPrefix(key, "keys/"); ok {
						fn(cutover.WatchEvent{Key: &cutover.KeyEvent{ID: id}})
					}
					continue
				}
				if id, ok := strings.CutPrefix(key, "keys/"); ok {
					k := new(cutover.KeyProgress)
					if json.Unmarshal(ev.Kv.Value, k) == nil {
						fn(cutover.WatchEvent{Key: &cutover.KeyEvent{ID: id, Progress: k}})
					}
					continue
				}
				switch {
				case key == "header":
					h := new(cutover.Header)
					if json.Unmarshal(ev.Kv.Value, h) == nil {
						fn(cutover.WatchEvent{Header: h})
					}
				case strings.HasPrefix(key, "created/"):
					n := new(cutover.CreatedKey)
					if json.Unmarshal(ev.Kv.Value, n) == nil {
						fn(cutover.WatchEvent{Created: n})
					}
				}
			}
			if len(resp.Events) > 0 {
				e.loadRev.Store(resp.Header.Revision)
			}
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		if gap {
			// Compacted or the watch lost its leader (etcd unreachable): the caller
			// reloads, and the next watch starts after that load.
			e.reachable.Store(false)
			fn(cutover.WatchEvent{Resync: true})
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Publish implements cutover.Fleet: the member record under the lease, and the registration
// (without lease) whenever the acknowledged epoch moves.
func (e *Etcd) Publish(ctx context.Context, m cutover.MemberRecord) error {
	s, err := e.session(ctx)
	if err != nil {
		return err
	}
	m.Name = e.cfg.Member
	if e.cfg.Address != "" {
		m.Address = e.cfg.Address
	}
	if m.Version == "" {
		m.Version = e.cfg.Version
	}
	v, err := json.Marshal(m)
	if err != nil {
		return err
	}
	ops := []clientv3.Op{clientv3.OpPut(e.pfx+"members/"+m.Name, string(v), clientv3.WithLease(s.Lease()))}
	e.mu.Lock()
	reg := e.registered != m.AppliedEpoch+1
	e.mu.Unlock()
	if reg {
		r := cutover.MemberRecord{Name: m.Name, Address: m.Address, Version: m.Version,
			AppliedEpoch: m.AppliedEpoch, Primary: m.Primary, Fallback: m.Fallback, Heartbeat: m.Heartbeat}
		rv, err := json.Marshal(r)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(e.pfx+"registry/"+m.Name, string(rv)))
	}
	err = e.call(ctx, func(ctx context.Context) error {
		_, err := e.cli.Txn(ctx).Then(ops...).Commit()
		return err
	})
	if err == nil && reg {
		e.mu.Lock()
		e.registered = m.AppliedEpoch + 1
		e.mu.Unlock()
	}
	return err
}

// Members implements cutover.Fleet.
func (e *Etcd) Members(ctx context.Context) ([]cutover.MemberInfo, error) {
	var reg, live *clientv3.GetResponse
	err := e.call(ctx, func(ctx context.Context) error {
		r, err := e.cli.Txn(ctx).Then(
			clientv3.OpGet(e.pfx+"registry/", clientv3.WithPrefix()),
			clientv3.OpGet(e.pfx+"members/", clientv3.WithPrefix())).Commit()
		if err != nil {
			return err
		}
		reg, live = (*clientv3.GetResponse)(r.Responses[0].GetResponseRange()), (*clientv3.GetResponse)(r.Responses[1].GetResponseRange())
		return nil
	})
	if err != nil {
		return nil, err
	}
	byName := map[string]*cutover.MemberInfo{}
	var out []cutover.MemberInfo
	for _, kv := range reg.Kvs {
		var m cutover.MemberRecord
		if json.Unmarshal(kv.Value, &m) != nil {
			continue
		}
		m.Name = strings.TrimPrefix(string(kv.Key), e.pfx+"registry/")
		out = append(out, cutover.MemberInfo{MemberRecord: m})
	}
	for i := range out {
		byName[out[i].Name] = &out[i]
	}
	for _, kv := range live.Kvs {
		var m cutover.MemberRecord
		if json.Unmarshal(kv.Value, &m) != nil {
			continue
		}
		m.Name = strings.TrimPrefix(string(kv.Key), e.pfx+"members/")
		if p, ok := byName[m.Name]; ok {
			if m.AppliedEpoch < p.AppliedEpoch {
				m.AppliedEpoch = p.AppliedEpoch
			}
			p.MemberRecord, p.Live = m, true
		}
		// A live record without registration is a member mid-join: it counts once registered.
	}
	sortMembers(out)
	return out, nil
}

func sortMembers(ms []cutover.MemberInfo) {
	for i := 1; i < len(ms); i++ {
		for j := i; j > 0 && ms[j].Name < ms[j-1].Name; j-- {
			ms[j], ms[j-1] = ms[j-1], ms[j]
		}
	}
}

// Forget implements cutover.Fleet.
func (e *Etcd) Forget(ctx context.Context, name string) error {
	if err := ValidMemberName(name); err != nil {
		return fmt.Errorf("%w: %v", cutover.ErrUnknownMember, err)
	}
	return e.call(ctx, func(ctx context.Context) error {
		r, err := e.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(e.pfx+"members/"+name), "=", 0),
				clientv3.Compare(clientv3.CreateRevision(e.pfx+"registry/"+name), ">", 0)).
			Then(clientv3.OpDelete(e.pfx + "registry/" + name)).
			Else(clientv3.OpGet(e.pfx+"members/"+name, clientv3.WithCountOnly())).
			Commit()
		if err != nil {
			return err
		}
		if r.Succeeded {
			return nil
		}
		if r.Responses[0].GetResponseRange().Count > 0 {
			return fmt.Errorf("%w: %s holds a live lease; stop it first or let it acknowledge", cutover.ErrMemberAlive, name)
		}
		return fmt.Errorf("%w: %s", cutover.ErrUnknownMember, name)
	})
}

// Driver implements cutover.Fleet: the oldest election key is the leader.
func (e *Etcd) Driver(ctx context.Context) (string, string, error) {
	var name string
	err := e.call(ctx, func(ctx context.Context) error {
		r, err := e.cli.Get(ctx, e.pfx+"election/", clientv3.WithFirstCreate()...)
		if err != nil {
			return err
		}
		if len(r.Kvs) > 0 {
			name = string(r.Kvs[0].Value)
		}
		return nil
	})
	if err != nil || name == "" {
		return "", "", err
	}
	var addr string
	err = e.call(ctx, func(ctx context.Context) error {
		r, err := e.cli.Get(ctx, e.pfx+"registry/"+name)
		if err != nil {
			return err
		}
		if len(r.Kvs) > 0 {
			var m cutover.MemberRecord
			if json.Unmarshal(r.Kvs[0].Value, &m) == nil {
				addr = m.Address
			}
		}
		return nil
	})
	return name, addr, err
}
