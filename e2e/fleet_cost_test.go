package e2e

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// etcdOps reads the embedded etcd's own counters of reads and writes (this process's default
// registry; the e2e tests run one at a time).
func etcdOps(t *testing.T) (ranges, puts float64) {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "etcd_mvcc_range_total":
				ranges += m.GetCounter().GetValue()
			case "etcd_mvcc_put_total":
				puts += m.GetCounter().GetValue()
			}
		}
	}
	return ranges, puts
}

// In steady state a fleet costs etcd at most one write per replica per second (the member
// record), and serving makes no etcd call: reads and writes do not grow with the requests.
func TestFleetSteadyStateEtcdCost(t *testing.T) {
	const replicas = 3
	f := startFleet(t, 20, replicas, nil)
	time.Sleep(2 * time.Second) // past the start-up writes (registrations, first epoch)
	r0, p0 := etcdOps(t)
	start := time.Now()
	loads := f.loadAll(t, 100, "ss")
	time.Sleep(5 * time.Second)
	var served int64
	for _, l := range loads {
		rep := l.stop()
		noFailures(t, "steady", rep)
		served += rep.Total
	}
	secs := time.Since(start).Seconds()
	r1, p1 := etcdOps(t)
	reads, writes := r1-r0, p1-p0
	t.Logf("%.1f s, %d requests served: %.0f etcd reads, %.0f writes (%.2f writes per replica per second)",
		secs, served, reads, writes, writes/replicas/secs)
	if max := float64(replicas) * (secs + 1); writes > max {
		t.Errorf("%.0f etcd writes in %.1f s over %d replicas: more than one per replica per second", writes, secs, replicas)
	}
	// Background reads are bounded by time, not by traffic: the requests outnumber them
	// tenfold here, so one read per request would show.
	if served < 10*int64(reads+1) {
		t.Fatalf("only %d requests for %.0f reads: the load is too small to tell", served, reads)
	}
	if reads > float64(served)/10 {
		t.Errorf("%.0f etcd reads for %d requests", reads, served)
	}
}
