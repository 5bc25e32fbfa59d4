package integration

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certagent/certagent/agent/carotate"
)

// caBundles and caLeaves are where the cluster CA must show on the rig's
// nodes (prefixes of findCA's entries): every bundle, and every
// certificate it signs that is in use.
func caBundles() []string {
	out := []string{"cp:etc/kubernetes/pki/ca.crt", "worker:etc/kubernetes/pki/ca.crt"}
	for _, f := range []string{"admin", "super-admin", "controller-manager", "scheduler", "kubelet"} {
		out = append(out, "cp:etc/kubernetes/"+f+".conf cluster ")
	}
	return out
}

func caLeaves() []string {
	out := []string{"cp:etc/kubernetes/pki/apiserver.crt", "cp:etc/kubernetes/pki/apiserver-kubelet-client.crt", "worker:var/lib/kubelet/pki/kubelet-client-"}
	for _, f := range []string{"admin", "super-admin", "controller-manager", "scheduler", "kubelet"} {
		out = append(out, "cp:etc/kubernetes/"+f+".conf user ")
	}
	return out
}

// expectEverywhere fails the test unless the CA is in every bundle and
// signed every certificate in use.
func expectEverywhere(t *testing.T, what string, u caUse) {
	t.Helper()
	for _, w := range caBundles() {
		if !hasPrefix(u.bundles, w) {
			t.Errorf("%s is not in %s; bundles holding it: %v", what, w, u.bundles)
		}
	}
	for _, w := range caLeaves() {
		if !hasPrefix(u.leaves, w) {
			t.Errorf("%s did not sign %s; certificates it signed: %v", what, w, u.leaves)
		}
	}
}

// checkRotated checks the end of a rotation that began at start, away
// from oldCA: the new CA everywhere and the old one nowhere, the
// administrator never refused, no missed Lease renewal the API server's
// own restart does not explain; and it reports the figures. With strict,
// no component restarted more than once in a phase.
func (rig *caRig) checkRotated(t *testing.T, start time.Time, oldCA *x509.Certificate, roots map[string]string, admin *adminPoller, leases *leaseWatch, strict bool) {
	t.Helper()
	rig.tl.mu.Lock()
	crashes := append([]string(nil), rig.tl.crashes...)
	rig.tl.mu.Unlock()
	if len(crashes) > 0 {
		t.Errorf("control-plane components exited by themselves:\n%s", strings.Join(crashes, "\n"))
	}
	newCA := firstCert(t, filepath.Join(rig.cp, "etc/kubernetes/pki/ca.crt"))
	if newCA.Equal(oldCA) || !bytes.Equal(newCA.RawSubject, oldCA.RawSubject) || !newCA.IsCA {
		t.Errorf("ca.crt after the rotation: %s serial %s (CA %v); before: %s serial %s", newCA.Subject, newCA.SerialNumber, newCA.IsCA, oldCA.Subject, oldCA.SerialNumber)
	}
	old := findCA(t, oldCA, roots)
	if len(old.leaves)+len(old.bundles) > 0 {
		t.Errorf("after the rotation the old CA is still in bundles %v and signed certificates in use %v", old.bundles, old.leaves)
	}
	if len(old.history) > 0 {
		t.Logf("the kubelet store keeps, unused, old pairs of the old CA: %v", old.history)
	}
	expectEverywhere(t, "the new CA", findCA(t, newCA, roots))

	outages := rig.tl.since(start, "kube-apiserver")
	trust, outside, inside := classify(admin, start, outages)
	ok, _, marks := admin.snapshot()
	if len(trust)+len(outside) > 0 {
		t.Errorf("administrator's requests refused for trust: %v; failed while the kube-apiserver was up: %v", trust, outside)
	}
	if strict && len(outages) > 0 {
		// kube-apiserver reads what a `ca` rotation changes of its files
		// by itself: the client CA bundles, its serving and kubelet client
		// certificates.
		t.Errorf("the one kube-apiserver restarted %d times: %d administrator's requests failed", len(outages), inside)
	}
	var downtime time.Duration
	for _, iv := range outages {
		downtime += iv.end.Sub(iv.start)
	}
	t.Logf("figures: administrator's requests: %d answered, %d refused for trust, %d failed outside a kube-apiserver restart, %d failed while the one kube-apiserver restarted (%d restarts, %s down in all)",
		ok, len(trust), len(outside), inside, len(outages), downtime.Round(time.Millisecond))
	for _, n := range []string{caWorkerName, caCPName} {
		gaps := leases.gaps(n, start)
		if len(gaps) == 0 {
			t.Errorf("%s: no Lease renewal seen during the rotation", n)
			continue
		}
		var unexplained time.Duration
		for _, g := range gaps {
			if !g.overlapsAny(outages) {
				unexplained = max(unexplained, g.length())
			}
		}
		if unexplained >= 2*caLeaseRenew {
			t.Errorf("%s missed a Lease renewal: %s between two with the kube-apiserver up", n, unexplained.Round(time.Millisecond))
		}
		t.Logf("figures: %s Lease: %d renewals, longest gap %s (%s..%s), longest with the kube-apiserver up %s (renew interval %s)",
			n, leases.count(n, start), gaps[0].length().Round(time.Millisecond), gaps[0].from.Format("15:04:05.000"), gaps[0].to.Format("15:04:05.000"),
			unexplained.Round(time.Millisecond), caLeaseRenew)
	}
	rig.restartsPerPhase(t, start, marks, strict)
	rig.logPhaseTimes(t)
}

// restartsPerPhase counts the restarts of each component in each phase
// (the phase the administrator saw when the restart began): the static
// pods from the stand-in, the worker's kubelet from its journal.
func (rig *caRig) restartsPerPhase(t *testing.T, start time.Time, marks []phaseMark, strict bool) {
	t.Helper()
	counts := map[string]map[carotate.Phase]int{}
	times := map[string][]string{}
	add := func(comp string, at time.Time) {
		if counts[comp] == nil {
			counts[comp] = map[carotate.Phase]int{}
		}
		p := phaseAt(marks, at)
		counts[comp][p]++
		times[comp] = append(times[comp], string(p)+"@"+at.Format("15:04:05.000"))
	}
	for _, iv := range rig.tl.since(start, "") {
		add(iv.what, iv.start)
	}
	for _, n := range []*realNode{rig.cpNode, rig.worker} {
		for _, at := range n.unitStarts("kubelet.service", start) {
			add(n.name+" kubelet", at)
		}
	}
	comps := make([]string, 0, len(counts))
	for c := range counts {
		comps = append(comps, c)
	}
	sort.Strings(comps)
	var lines []string
	for _, c := range comps {
		var per []string
		for _, p := range carotate.Phases {
			if n := counts[c][p]; n > 0 {
				per = append(per, fmt.Sprintf("%s %d", p, n))
				if strict && n > 1 {
					t.Errorf("%s restarted %d times in phase %s", c, n, p)
				}
			}
		}
		lines = append(lines, fmt.Sprintf("  %-32s %s  (%s)", c, strings.Join(per, ", "), strings.Join(times[c], " ")))
	}
	var seen []string
	for _, m := range marks {
		if m.at.After(start) {
			seen = append(seen, fmt.Sprintf("%s@%s", m.phase, m.at.Format("15:04:05.000")))
		}
	}
	t.Logf("figures: restarts per component per phase (phases as the administrator saw them begin: %s):\n%s", strings.Join(seen, " "), strings.Join(lines, "\n"))
}

// logPhaseTimes logs the phases' wall times the rotation's ConfigMap keeps.
func (rig *caRig) logPhaseTimes(t *testing.T) {
	t.Helper()
	cs, done, err := freshClient(filepath.Join(rig.cp, "etc/kubernetes/admin.conf"))
	if err != nil {
		t.Error(err)
		return
	}
	defer done()
	cm, err := cs.CoreV1().ConfigMaps(carotate.Namespace).Get(rig.ctx, carotate.ConfigMapName, metav1.GetOptions{})
	if err != nil {
		t.Error(err)
		return
	}
	c, err := carotate.Parse(cm.Data)
	if err != nil {
		t.Error(err)
		return
	}
	if c.Phase != carotate.Done {
		t.Errorf("the ConfigMap says phase %s, want done", c.Phase)
	}
	t.Logf("figures: phase wall times (ConfigMap phaseTimes):\n  %s", strings.Join(c.PhaseTimes, "\n  "))
}

// unitStarts are the times systemd started the unit after since, from
// the node's journal.
func (r *realNode) unitStarts(unit string, since time.Time) []time.Time {
	out, _ := r.Exec("journalctl", "-o", "json", "--no-pager", "UNIT="+unit, "MESSAGE_ID=39f53479d3a045ac8e11786248231fbf")
	var at []time.Time
	for _, line := range strings.Split(string(out), "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		us, _ := strconv.ParseInt(fmt.Sprint(e["__REALTIME_TIMESTAMP"]), 10, 64)
		if t := time.UnixMicro(us); t.After(since) {
			at = append(at, t)
		}
	}
	return at
}

// journal is the node's certagent journal since, one line per entry with
// the fields that say what happened, for failures.
func (r *realNode) journal(since time.Time) string {
	out, _ := r.Exec("journalctl", "-u", "certagent", "-o", "json", "--no-pager", "--since", since.UTC().Format("2006-01-02 15:04:05 UTC"))
	var lines []string
	for _, line := range strings.Split(string(out), "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		us, _ := strconv.ParseInt(fmt.Sprint(e["__REALTIME_TIMESTAMP"]), 10, 64)
		l := time.UnixMicro(us).Format("15:04:05.000") + " " + fmt.Sprint(e["MESSAGE"])
		for _, f := range []string{"COMPONENT", "CERT_NAME", "CA_PHASE", "ISSUER", "REASON"} {
			if v, ok := e[f]; ok {
				l += " " + f + "=" + fmt.Sprint(v)
			}
		}
		lines = append(lines, l)
	}
	return strings.Join(lines, "\n")
}
