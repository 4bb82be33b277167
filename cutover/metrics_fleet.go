package cutover

import "github.com/prometheus/client_golang/prometheus"

// fleetMetrics describe this replica's view of the fleet. Member names are labels: they are
// operator-chosen and bounded by the fleet's size (never a key id or a principal).
type fleetMetrics struct {
	fleetApplied       prometheus.Gauge
	fleetStoreUp       prometheus.Gauge
	fleetDriver        prometheus.Gauge
	fleetDriverChanges prometheus.Counter
	fleetRefused       prometheus.Counter
	fleetMembers       *prometheus.GaugeVec
	fleetMemberEpoch   *prometheus.GaugeVec
}

func newFleetMetrics(reg prometheus.Registerer) (fleetMetrics, error) {
	m := fleetMetrics{
		fleetApplied: prometheus.NewGauge(prometheus.GaugeOpts{Name: "xks_fleet_applied_epoch",
			Help: "Newest cutover epoch whose route this replica applied and acknowledged."}),
		fleetStoreUp: prometheus.NewGauge(prometheus.GaugeOpts{Name: "xks_fleet_store_up",
			Help: "1 when the fleet store (etcd) answered this replica's last heartbeat, 0 when unreachable (serving the last applied epoch, no phase change)."}),
		fleetDriver: prometheus.NewGauge(prometheus.GaugeOpts{Name: "xks_fleet_driver",
			Help: "1 while this replica is the elected driver of the migration."}),
		fleetDriverChanges: prometheus.NewCounter(prometheus.CounterOpts{Name: "xks_fleet_driver_elections_total",
			Help: "Times this replica was elected driver."}),
		fleetRefused: prometheus.NewCounter(prometheus.CounterOpts{Name: "xks_fleet_epochs_refused_total",
			Help: "Epochs read from the fleet store that this replica did not apply because the backends' cutover markers did not confirm them (yet)."}),
		fleetMembers: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "xks_fleet_members",
			Help: "Registered fleet members by liveness (live: lease alive; expired: registered, lease gone)."}, []string{"state"}),
		fleetMemberEpoch: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "xks_fleet_member_acked_epoch",
			Help: "Epoch each registered member acknowledged, as this replica last read it."}, []string{"member"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.fleetApplied, err = register(reg, m.fleetApplied); err != nil {
		return m, err
	}
	if m.fleetStoreUp, err = register(reg, m.fleetStoreUp); err != nil {
		return m, err
	}
	if m.fleetDriver, err = register(reg, m.fleetDriver); err != nil {
		return m, err
	}
	if m.fleetDriverChanges, err = register(reg, m.fleetDriverChanges); err != nil {
		return m, err
	}
	if m.fleetRefused, err = register(reg, m.fleetRefused); err != nil {
		return m, err
	}
	if m.fleetMembers, err = register(reg, m.fleetMembers); err != nil {
		return m, err
	}
	if m.fleetMemberEpoch, err = register(reg, m.fleetMemberEpoch); err != nil {
		return m, err
	}
	return m, nil
}

func (m *fleetMetrics) setMembers(ms []MemberInfo) {
	live, expired := 0, 0
	m.fleetMemberEpoch.Reset()
	for _, x := range ms {
		if x.Live {
			live++
		} else {
			expired++
		}
		m.fleetMemberEpoch.WithLabelValues(x.Name).Set(float64(x.AppliedEpoch))
	}
	m.fleetMembers.WithLabelValues("live").Set(float64(live))
	m.fleetMembers.WithLabelValues("expired").Set(float64(expired))
}
