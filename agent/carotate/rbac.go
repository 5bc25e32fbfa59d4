package carotate

import (
	"context"
	"fmt"
	"reflect"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certagent/certagent/agent/kube"
)

// RBACName names the Role and RoleBinding that let every node read the
// rotation's ConfigMap (and nothing else).
const RBACName = "certagent-ca-rotation"

// NodesGroup is the group of every node's credential.
const NodesGroup = "system:nodes"

// Role lets its subjects get, list and watch the rotation's ConfigMap only
// (list and watch need a field selector on its name).
func Role() *rbacv1.Role {
	return &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: RBACName, Namespace: Namespace, Labels: managedBy()},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"},
			ResourceNames: []string{ConfigMapName}, Verbs: []string{"get", "list", "watch"}}},
	}
}

// RoleBinding binds Role to the group system:nodes.
func RoleBinding() *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: RBACName, Namespace: Namespace, Labels: managedBy()},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: RBACName},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: NodesGroup}},
	}
}

func managedBy() map[string]string {
	return map[string]string{"app.kubernetes.io/managed-by": "certagent"}
}

// EnsureRBAC creates Role and RoleBinding, or puts them back as they
// should be when someone changed them. It is idempotent.
func EnsureRBAC(ctx context.Context, cs kube.Interface) error {
	roles, bindings := cs.RbacV1().Roles(Namespace), cs.RbacV1().RoleBindings(Namespace)
	want := Role()
	role, err := roles.Get(ctx, RBACName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = roles.Create(ctx, want, metav1.CreateOptions{})
	case err == nil && !reflect.DeepEqual(role.Rules, want.Rules):
		role.Rules = want.Rules
		_, err = roles.Update(ctx, role, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("role %s/%s: %w", Namespace, RBACName, err)
	}
	wantB := RoleBinding()
	b, err := bindings.Get(ctx, RBACName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = bindings.Create(ctx, wantB, metav1.CreateOptions{})
	case err == nil && b.RoleRef != wantB.RoleRef:
		// The role reference cannot change: replace the binding.
		if err = bindings.Delete(ctx, RBACName, metav1.DeleteOptions{}); err == nil {
			_, err = bindings.Create(ctx, wantB, metav1.CreateOptions{})
		}
	case err == nil && !reflect.DeepEqual(b.Subjects, wantB.Subjects):
		b.Subjects = wantB.Subjects
		_, err = bindings.Update(ctx, b, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("rolebinding %s/%s: %w", Namespace, RBACName, err)
	}
	return nil
}
