// Package charts holds rotor's Helm chart (charts/rotor). It has no code: its
// tests lint the chart, check it against the generated CRDs, RBAC and rotor's
// flags, apply it to a real API server, and install, upgrade and uninstall
// it there with rotor running in-process as the chart's ServiceAccount.
package charts
