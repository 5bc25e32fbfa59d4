//go:build tools

// Package k8stools pins the real Kubernetes binaries that certagent's tests
// run against: kubeadm (fixture generator and reference), kube-apiserver and
// kube-controller-manager (CSR renewal), and the kubelet (the node).
package k8stools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
