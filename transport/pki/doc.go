// Package pki makes and loads the certificates of a twinblock replication
// pair and builds the mutual-TLS configs the peer link uses.
//
// Each pair has its own small CA. Both nodes hold the CA certificate and
// their own certificate and key; the CA key stays with the admin (it is
// needed only to issue or rotate node certificates).
//
//	ca, _ := pki.GenerateCA("twinblock pair vol0")
//	a, _ := pki.GenerateNode(ca, "a", []string{"10.0.0.1", "node-a.dc1"})
//	_ = pki.Write(dir, "ca", ca, false)   // ca.pem, ca-key.pem (0600)
//	_ = pki.Write(dir, "a", a, false)     // a.pem, a-key.pem (0600)
//
//	base, _ := pki.LoadConfig("ca.pem", "a.pem", "a-key.pem")
//	// transport.DialOptions{TLS: base, PeerID: "b", ...}
//
// Contract:
//   - Keys are ECDSA P-256; node certificates serve as both TLS server and
//     client certificate (the dialing side is whichever reconnects first).
//   - A node's identity is its node id, carried as CN and as the URI SAN
//     twinblock://node/<id>. When a certificate has such URI SANs, only
//     they count; otherwise the CN and DNS SANs do (certificates from an
//     external CA). IP and DNS SANs for the hosts exist for tools, not for
//     peer identity: the dialed address never decides who the peer is.
//   - ClientConfig and ServerConfig enforce TLS 1.3, require the peer's
//     certificate, verify its chain against the pair's CA (expiry
//     included) and its identity against the configured peer id. Failures
//     wrap ErrUntrusted or ErrIdentity (and the x509 error).
//   - Files: certificates 0644, keys 0600, written via temp file and rename;
//     Write refuses to overwrite unless asked.
package pki
