// Package envtest tests hack/build-control-plane.sh, which puts the control
// plane (kube-apiserver, etcd, kubectl) into bin/k8s: present, downloaded by
// setup-envtest, or built from Go modules. The tests serve a release index
// and an envtest archive of small stand-in executables from 127.0.0.1, so
// the download path is exercised without the internet, and stub the module
// build (CONTROL_PLANE_BUILD), so the fallback takes no ten minutes.
package envtest
