package controllers

import (
	"testing"

	"rotor.dev/rotor/pkg/dev/testenv"
)

// env is the package's control plane: a real kube-apiserver and etcd.
var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }
