package config

// adminTLS checks [admin]'s TLS keys: its own certificate (cert_file and key_file together) or
// the server's (tls = true); beyond loopback (allow_remote) one of them is required, since the
// bearer token must never cross a network in clear text. The proxy refuses the same at start-up
// (proxy.AdminConfig); this check names the file and field.
func (c *checker) adminTLS(a *Admin) {
	// Relative to the file's directory, as every other path of the file.
	a.CertFile, a.KeyFile = c.rel(a.CertFile), c.rel(a.KeyFile)
	if (a.CertFile == "") != (a.KeyFile == "") {
		c.fail("admin.cert_file", "cert_file and key_file go together")
	}
	if a.AllowRemote && !a.TLS && a.CertFile == "" {
		c.fail("admin.allow_remote", "the admin API beyond loopback needs TLS: set admin.tls = true (the server's certificate) or admin.cert_file and admin.key_file")
	}
}
