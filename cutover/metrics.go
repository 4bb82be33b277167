package cutover

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	epoch     prometheus.Gauge
	state     *prometheus.GaugeVec
	keys      *prometheus.GaugeVec
	shadow    *prometheus.CounterVec
	rollbacks *prometheus.CounterVec
	fallbacks prometheus.Counter
	// rightsCarried counts rights changes made on the target while switched and carried to the
	// source, by change (grant, revoke_access, revoke_key, destroy).
	rightsCarried *prometheus.CounterVec
	// rightsSyncPass: seconds the last rights-sync pass took; with the interval, how long a
	// rights change on the target takes to reach the source.
	rightsSyncPass prometheus.Gauge
	// rechecks counts the target's definite refusals sent to the source for a second opinion,
	// by verdict (caller: the source refused the same; target: it did not; unjudged: too many
	// at once, counted against the target).
	rechecks *prometheus.CounterVec
	// createKeyChecks counts the existence checks of CreateKeys during a migration by how they
	// were answered: records (the migration's own, no call), backend (a KMIP read), failed (the
	// backend could not be read in time: the CreateKey is refused).
	createKeyChecks *prometheus.CounterVec
	fleetMetrics
}

// newMetrics builds the controller's metrics and registers them on reg (nil: none); the fleet's
// (xks_fleet_*) only in fleet mode, where they mean something.
func newMetrics(reg prometheus.Registerer, fleet bool) (*metrics, error) {
	m := &metrics{
		epoch: prometheus.NewGauge(prometheus.GaugeOpts{Name: "xks_cutover_epoch",
			Help: "Epoch of the cutover state machine (bumped on every transition)."}),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "xks_cutover_state",
			Help: "1 for the current cutover state, 0 for the others."}, []string{"state"}),
		keys: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "xks_cutover_keys",
			Help: "Keys of the current migration by phase and result."}, []string{"phase", "result"}),
		shadow: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xks_shadow_results_total",
			Help: "Mirrored Decrypts by result (match, mismatch, error, dropped)."}, []string{"result"}),
		rollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xks_cutover_rollbacks_total",
			Help: "Rollbacks by reason (manual, error_rate, p99, hard_ceiling, resumed)."}, []string{"reason"}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{Name: "xks_cutover_fallbacks_total",
			Help: "Calls retried on the fallback backend after the switch."}),
		rightsCarried: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xks_cutover_rights_carried_total",
			Help: "Rights changes made on the target while switched and carried to the source as the same change, by change (grant, revoke_access, revoke_key, destroy)."}, []string{"change"}),
		rightsSyncPass: prometheus.NewGauge(prometheus.GaugeOpts{Name: "xks_cutover_rights_sync_pass_seconds",
			Help: "Seconds the last rights-sync pass took while switched (paced at rights_sync_rate keys a second); with the 1 s interval, how long a rights change on the target takes to reach the source."}),
		rechecks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xks_cutover_probation_rechecks_total",
			Help: "Definite refusals from the target while switched (KeyNotFound, InvalidCiphertext, InvalidKeyUsage, InvalidState, AccessDenied) sent to the source for a second opinion, by verdict: caller (the source refused the same: not counted against the target), target (counted), unjudged (too many at once: counted)."}, []string{"verdict"}),
		createKeyChecks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xks_cutover_createkey_checks_total",
			Help: "Whether a backend holds the id of a CreateKey made during a migration, by how it was answered: records (the migration's own, no backend call), backend (read as the keys' owner), failed (no answer in time: the CreateKey is refused with a retryable error)."}, []string{"answer"}),
	}
	var err error
	fleetReg := reg
	if !fleet {
		fleetReg = nil
	}
	if m.fleetMetrics, err = newFleetMetrics(fleetReg); err != nil {
		return nil, err
	}
	if reg == nil {
		return m, nil
	}
	if m.epoch, err = register(reg, m.epoch); err != nil {
		return nil, err
	}
	if m.state, err = register(reg, m.state); err != nil {
		return nil, err
	}
	if m.keys, err = register(reg, m.keys); err != nil {
		return nil, err
	}
	if m.rechecks, err = register(reg, m.rechecks); err != nil {
		return nil, err
	}
	if m.createKeyChecks, err = register(reg, m.createKeyChecks); err != nil {
		return nil, err
	}
	if m.shadow, err = register(reg, m.shadow); err != nil {
		return nil, err
	}
	if m.rollbacks, err = register(reg, m.rollbacks); err != nil {
		return nil, err
	}
	if m.fallbacks, err = register(reg, m.fallbacks); err != nil {
		return nil, err
	}
	if m.rightsCarried, err = register(reg, m.rightsCarried); err != nil {
		return nil, err
	}
	if m.rightsSyncPass, err = register(reg, m.rightsSyncPass); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or adopts the identical collector already registered.
func register[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(T); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}

func (m *metrics) setState(s State, epoch uint64) {
	m.epoch.Set(float64(epoch))
	for _, st := range allStates {
		v := 0.0
		if st == s {
			v = 1
		}
		m.state.WithLabelValues(string(st)).Set(v)
	}
}

// setKeys recomputes the per-key gauges; the caller holds the controller's mu.
func (m *metrics) setKeys(byPR map[[2]string]int) {
	m.keys.Reset()
	for pr, n := range byPR {
		m.keys.WithLabelValues(pr[0], pr[1]).Set(float64(n))
	}
}
