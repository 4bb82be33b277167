// Package e2e holds end-to-end fault scenarios of the live migration A → B: real TLS, the real
// proxy and cutover controller (devstack), two emulated Cosmian servers with fault injection,
// and AWS-KMS-like signed traffic from bench/loadgen. It has tests only.
package e2e
