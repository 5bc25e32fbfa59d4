package pki

// RESTConfigFromData exposes restConfig to the fuzz target: a kubeconfig's
// bytes, its node directory and a reader of node paths.
var RESTConfigFromData = restConfig
