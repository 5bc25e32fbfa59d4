package carotate

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/kube/kubefake"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestStatus(t *testing.T) {
	f := newFakeCluster(t, node("cp1", true), node("w1", false))
	d, err := ReadStatus(context.Background(), kubefake.Wrap(f.cs))
	if err != nil || d.Rotation != nil || d.ExitCode() != StatusIdle || len(d.Nodes) != 2 || d.Nodes[0].State != noReportState {
		t.Fatalf("no rotation: %+v %v", d, err)
	}
	f.held["w1"] = Trust
	r := f.rotator(nil)
	r.Until = Prepare
	if _, err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	id := f.state().ID
	f.manual = true
	f.report("w1", NodeReport{ID: id, Phase: Trust, Blocked: "etcd is not healthy"})
	f.report("cp1", NodeReport{ID: id, Phase: Trust, Left: "restart kube-apiserver", HasNewKey: true})
	d, err = ReadStatus(context.Background(), kubefake.Wrap(f.cs))
	if err != nil {
		t.Fatal(err)
	}
	if d.ExitCode() != StatusTrouble || d.Rotation.Phase != Prepare || len(d.Rotation.PhaseTimes) != 1 {
		t.Fatalf("blocked node: exit %d, rotation %+v", d.ExitCode(), d.Rotation)
	}
	var js bytes.Buffer
	if err := d.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Rotation struct{ ID, Phase string }
		Nodes    []map[string]any
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.Rotation.ID != id || back.Nodes[1]["blocked"] != "etcd is not healthy" || back.Nodes[0]["hasNewKey"] != true {
		t.Fatalf("JSON: %v\n%s", err, js.String())
	}
	var tab bytes.Buffer
	if err := d.WriteTable(&tab, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CA ca rotation " + id + ": phase prepare", "1m0s", "cp1   control-plane  trust  in-progress  yes", "w1    worker         trust  blocked      no       etcd is not healthy"} {
		if !strings.Contains(tab.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, tab.String())
		}
	}
	f.report("w1", NodeReport{ID: id, Phase: Trust, Left: "restart kubelet"})
	if d, _ = ReadStatus(context.Background(), kubefake.Wrap(f.cs)); d.ExitCode() != StatusRunning {
		t.Errorf("in progress: exit %d", d.ExitCode())
	}
	f.setData(map[string]string{"phase": "trust"})
	if d, err = ReadStatus(context.Background(), kubefake.Wrap(f.cs)); err != nil || d.ExitCode() != StatusTrouble || !strings.Contains(d.Error, "no ca or id") {
		t.Errorf("invalid ConfigMap: %v %+v", err, d)
	}
}

func TestViewIgnoresOtherRotations(t *testing.T) {
	n := node("w1", false)
	old := NodeReport{ID: "aaaa", Phase: Finish, Done: true}
	s, reason, msg := old.Condition()
	n.Status.Conditions = append(n.Status.Conditions, condition(s, reason, msg))
	if v := View(n, "bbbb"); v.Reported || v.DoneWith(Prepare) {
		t.Errorf("a report of rotation aaaa counts for bbbb: %+v", v)
	}
	if v := View(n, "aaaa"); !v.DoneWith(Finish) || !v.DoneWith(Prepare) || v.DoneWith(Done) {
		t.Errorf("own report: %+v", v)
	}
}

func TestLeaseStale(t *testing.T) {
	if why := leaseStale(lease("n", t0.Add(-39*time.Second)), t0); why != "" {
		t.Errorf("fresh lease: %s", why)
	}
	if why := leaseStale(lease("n", t0.Add(-41*time.Second)), t0); !strings.Contains(why, "41s ago") {
		t.Errorf("stale lease: %q", why)
	}
	l := lease("n", t0)
	l.Spec.RenewTime = nil
	if why := leaseStale(l, t0); why == "" {
		t.Error("a lease never renewed is fresh")
	}
	l = lease("n", t0.Add(-90*time.Second))
	l.Spec.LeaseDurationSeconds = nil
	if why := leaseStale(l, t0); !strings.Contains(why, "it lasts 40s") {
		t.Errorf("default duration: %q", why)
	}
}

func TestEnsureRBAC(t *testing.T) {
	f := newFakeCluster(t)
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if err := EnsureRBAC(ctx, kubefake.Wrap(f.cs)); err != nil {
			t.Fatal(err)
		}
	}
	if f.writes != 2 {
		t.Errorf("two runs made %d writes, want 2 (the second a no-op)", f.writes)
	}
	// A binding widened to everyone is put back.
	b, _ := f.cs.RbacV1().RoleBindings(Namespace).Get(ctx, RBACName, metav1.GetOptions{})
	b.Subjects[0].Name = "system:authenticated"
	f.cs.RbacV1().RoleBindings(Namespace).Update(ctx, b, metav1.UpdateOptions{})
	role, _ := f.cs.RbacV1().Roles(Namespace).Get(ctx, RBACName, metav1.GetOptions{})
	role.Rules[0].ResourceNames = nil
	f.cs.RbacV1().Roles(Namespace).Update(ctx, role, metav1.UpdateOptions{})
	if err := EnsureRBAC(ctx, kubefake.Wrap(f.cs)); err != nil {
		t.Fatal(err)
	}
	b, _ = f.cs.RbacV1().RoleBindings(Namespace).Get(ctx, RBACName, metav1.GetOptions{})
	role, _ = f.cs.RbacV1().Roles(Namespace).Get(ctx, RBACName, metav1.GetOptions{})
	if b.Subjects[0].Name != NodesGroup || len(role.Rules[0].ResourceNames) != 1 || role.Rules[0].ResourceNames[0] != ConfigMapName {
		t.Errorf("not put back: %+v %+v", b.Subjects, role.Rules)
	}
	if v := role.Rules[0].Verbs; strings.Join(v, ",") != "get,list,watch" {
		t.Errorf("verbs %v", v)
	}
}
