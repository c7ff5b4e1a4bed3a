package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Errors. Test with errors.Is.
var (
	// ErrUntrusted: the peer's certificate does not chain to the pair's CA
	// (other CA, expired, wrong key usage). The x509 error is wrapped too.
	ErrUntrusted = errors.New("pki: peer certificate not trusted")
	// ErrIdentity: the certificate is trusted but names another node.
	ErrIdentity = errors.New("pki: peer identity mismatch")
	// ErrNoCertificate: the peer presented no certificate.
	ErrNoCertificate = errors.New("pki: peer presented no certificate")
	// ErrBadPEM: a file is not the expected PEM certificate or key.
	ErrBadPEM = errors.New("pki: bad PEM")
	// ErrConfig: a tls.Config lacks what mutual TLS needs.
	ErrConfig = errors.New("pki: incomplete TLS config")
)

// Validity defaults. Certificates of a replication pair are long-lived on
// purpose: an expired certificate takes the link down, and rotation is a
// planned operation (twinblock certs node), not a routine one.
const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultNodeValidity = 3 * 365 * 24 * time.Hour
	// clockSkew backdates NotBefore so a peer whose clock is a little
	// behind does not reject a fresh certificate.
	clockSkew = time.Hour
)

// URIScheme is the scheme of the URI SAN naming a node:
// twinblock://node/<node id>.
const URIScheme = "twinblock"

// Cert is a certificate with its private key (Key is nil for a CA loaded
// without its key: it can verify but not sign).
type Cert struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// CertPEM returns the certificate in PEM.
func (c *Cert) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw})
}

// KeyPEM returns the private key in PKCS#8 PEM.
func (c *Cert) KeyPEM() ([]byte, error) {
	if c.Key == nil {
		return nil, fmt.Errorf("%w: no private key", ErrBadPEM)
	}
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// TLSCertificate returns the pair for tls.Config.Certificates.
func (c *Cert) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.Cert.Raw}, PrivateKey: c.Key, Leaf: c.Cert}
}

// Options tune generation; zero values take the defaults.
type Options struct {
	NotBefore time.Time // default now - 1h
	NotAfter  time.Time // default NotBefore + DefaultCAValidity / DefaultNodeValidity
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func validity(o Options, def time.Duration) (time.Time, time.Time) {
	nb, na := o.NotBefore, o.NotAfter
	if nb.IsZero() {
		nb = time.Now().Add(-clockSkew)
	}
	if na.IsZero() {
		na = nb.Add(def)
	}
	return nb, na
}

// GenerateCA makes a self-signed ECDSA P-256 CA for one replication pair.
func GenerateCA(name string) (*Cert, error) { return GenerateCAWith(name, Options{}) }

// GenerateCAWith is GenerateCA with explicit validity.
func GenerateCAWith(name string, o Options) (*Cert, error) {
	if name == "" {
		return nil, fmt.Errorf("pki: empty CA name")
	}
	key, tmpl, err := newTemplate(name, o, DefaultCAValidity)
	if err != nil {
		return nil, err
	}
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = true
	tmpl.MaxPathLenZero = true
	return sign(tmpl, tmpl, key, key)
}

// GenerateNode makes a node certificate signed by ca, usable as TLS server
// and client. Identity: CN and a URI SAN twinblock://node/<nodeID>; DNS
// and IP SANs for localhost, 127.0.0.1, ::1 and every entry of hosts.
func GenerateNode(ca *Cert, nodeID string, hosts []string) (*Cert, error) {
	return GenerateNodeWith(ca, nodeID, hosts, Options{})
}

// GenerateNodeWith is GenerateNode with explicit validity (tests make
// expired certificates with it).
func GenerateNodeWith(ca *Cert, nodeID string, hosts []string, o Options) (*Cert, error) {
	if ca == nil || ca.Key == nil || !ca.Cert.IsCA {
		return nil, fmt.Errorf("pki: signing needs a CA certificate with its key")
	}
	if nodeID == "" || strings.ContainsAny(nodeID, "/ \t\n") {
		return nil, fmt.Errorf("pki: node id %q: want a non-empty name without '/' or spaces", nodeID)
	}
	key, tmpl, err := newTemplate(nodeID, o, DefaultNodeValidity)
	if err != nil {
		return nil, err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	tmpl.URIs = []*url.URL{NodeURI(nodeID)}
	seen := map[string]bool{}
	for _, h := range append([]string{"localhost", "127.0.0.1", "::1"}, hosts...) {
		h = strings.TrimSpace(h)
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return sign(tmpl, ca.Cert, key, ca.Key)
}

// newTemplate makes a P-256 key and the parts every twinblock certificate
// shares: serial, subject and validity.
func newTemplate(cn string, o Options, def time.Duration) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	nb, na := validity(o, def)
	return key, &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"twinblock"}},
		NotBefore:    nb,
		NotAfter:     na,
	}, nil
}

func sign(tmpl, parent *x509.Certificate, key *ecdsa.PrivateKey, signer crypto.Signer) (*Cert, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("pki: create certificate: %w", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Cert{Cert: c, Key: key}, nil
}

// NodeURI is the URI SAN naming a node.
func NodeURI(nodeID string) *url.URL {
	return &url.URL{Scheme: URIScheme, Host: "node", Path: "/" + nodeID}
}

// Identities lists the names a certificate can be matched against: its
// twinblock URI SANs if it has any (they are exact, so the generic
// localhost/host SANs that every node carries cannot be mistaken for a
// node id); otherwise its CN and DNS SANs (certificates from another CA).
func Identities(c *x509.Certificate) []string {
	var ids []string
	for _, u := range c.URIs {
		if u.Scheme == URIScheme && u.Host == "node" {
			ids = append(ids, strings.TrimPrefix(u.Path, "/"))
		}
	}
	if len(ids) > 0 {
		return ids
	}
	if c.Subject.CommonName != "" {
		ids = append(ids, c.Subject.CommonName)
	}
	return append(ids, c.DNSNames...)
}

// MatchesIdentity reports whether the certificate names node id.
func MatchesIdentity(c *x509.Certificate, id string) bool {
	for _, s := range Identities(c) {
		if s == id {
			return true
		}
	}
	return false
}

// VerifyPeer checks that chain[0] chains to roots for usage and names
// peerID. It is what the TLS configs from ClientConfig and ServerConfig run.
func VerifyPeer(chain []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage, peerID string) error {
	if len(chain) == 0 {
		return ErrNoCertificate
	}
	if chain[0].IsCA {
		return fmt.Errorf("%w: a CA certificate is not a node certificate", ErrUntrusted)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	}); err != nil {
		return fmt.Errorf("%w: %w", ErrUntrusted, err)
	}
	if peerID == "" {
		return fmt.Errorf("%w: no expected peer id configured", ErrIdentity)
	}
	if !MatchesIdentity(chain[0], peerID) {
		return fmt.Errorf("%w: certificate names %q, expected %q", ErrIdentity, Identities(chain[0]), peerID)
	}
	return nil
}

// Config returns the base mutual-TLS config of a node: its certificate
// and the pair's CA as the only trusted root. Pass it to the transport (or
// through ClientConfig/ServerConfig when using crypto/tls directly).
func Config(ca *x509.Certificate, node *Cert) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &tls.Config{
		Certificates: []tls.Certificate{node.TLSCertificate()},
		RootCAs:      pool,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS13,
	}
}

// LoadConfig reads the CA certificate, node certificate and key files and
// returns Config(ca, node).
func LoadConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	ca, err := LoadCertificate(caFile)
	if err != nil {
		return nil, err
	}
	node, err := LoadCert(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return Config(ca, node), nil
}

// ClientConfig hardens base for dialing peerID: TLS 1.3 only, the server's
// certificate must chain to base.RootCAs and name peerID. Go's hostname
// check is replaced by the node identity check (the dialed address is
// not the identity).
func ClientConfig(base *tls.Config, peerID string) (*tls.Config, error) {
	if err := checkBase(base, base.RootCAs, "RootCAs"); err != nil {
		return nil, err
	}
	cfg := base.Clone()
	cfg.MinVersion = tls.VersionTLS13
	cfg.MaxVersion = 0
	cfg.InsecureSkipVerify = true // replaced by VerifyConnection below
	roots, user := base.RootCAs, base.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := VerifyPeer(cs.PeerCertificates, roots, x509.ExtKeyUsageServerAuth, peerID); err != nil {
			return err
		}
		if user != nil {
			return user(cs)
		}
		return nil
	}
	return cfg, nil
}

// ServerConfig hardens base for accepting peerID: TLS 1.3 only, a client
// certificate is required, must chain to base.ClientCAs (or RootCAs) and
// name peerID.
func ServerConfig(base *tls.Config, peerID string) (*tls.Config, error) {
	pool := base.ClientCAs
	if pool == nil {
		pool = base.RootCAs
	}
	if err := checkBase(base, pool, "ClientCAs"); err != nil {
		return nil, err
	}
	cfg := base.Clone()
	cfg.MinVersion = tls.VersionTLS13
	cfg.MaxVersion = 0
	// No ClientCAs: Go's client would silently withhold a certificate
	// from another CA, and the log would say "no certificate" instead of
	// "signed by unknown authority". Chain verification happens in
	// VerifyConnection (same code path as the client, plus identity).
	cfg.ClientCAs = nil
	cfg.ClientAuth = tls.RequireAnyClientCert
	user := base.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := VerifyPeer(cs.PeerCertificates, pool, x509.ExtKeyUsageClientAuth, peerID); err != nil {
			return err
		}
		if user != nil {
			return user(cs)
		}
		return nil
	}
	return cfg, nil
}

func checkBase(base *tls.Config, pool *x509.CertPool, poolName string) error {
	if base == nil {
		return fmt.Errorf("%w: nil config", ErrConfig)
	}
	if len(base.Certificates) == 0 && base.GetCertificate == nil && base.GetClientCertificate == nil {
		return fmt.Errorf("%w: no node certificate", ErrConfig)
	}
	if pool == nil {
		return fmt.Errorf("%w: no CA pool (%s)", ErrConfig, poolName)
	}
	return nil
}

// ---------------------------------------------------------------- files

// Write stores c as DIR/NAME.pem (0644) and, if it has a key,
// DIR/NAME-key.pem (0600, written before the certificate so a crash
// never leaves a certificate whose key is missing). Existing files are
// not overwritten unless overwrite is set.
func Write(dir, name string, c *Cert, overwrite bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	certPath, keyPath := Paths(dir, name)
	if !overwrite {
		for _, p := range []string{certPath, keyPath} {
			if _, err := os.Stat(p); err == nil {
				return fmt.Errorf("pki: %s exists (refusing to overwrite)", p)
			}
		}
	}
	if c.Key != nil {
		kp, err := c.KeyPEM()
		if err != nil {
			return err
		}
		if err := writeFile(keyPath, kp, 0o600); err != nil {
			return err
		}
	}
	return writeFile(certPath, c.CertPEM(), 0o644)
}

// Paths returns DIR/NAME.pem and DIR/NAME-key.pem.
func Paths(dir, name string) (certPath, keyPath string) {
	return filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
}

// writeFile writes via a temporary file and rename, with the final mode
// set before any key byte is written.
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// LoadCertificate reads one PEM certificate.
func LoadCertificate(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%w: %s: no CERTIFICATE block", ErrBadPEM, path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadPEM, path, err)
	}
	return c, nil
}

// LoadKey reads a PEM ECDSA private key (PKCS#8 or SEC 1).
func LoadKey(path string) (*ecdsa.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(data)
	if blk == nil {
		return nil, fmt.Errorf("%w: %s: no PEM block", ErrBadPEM, path)
	}
	switch blk.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrBadPEM, path, err)
		}
		ek, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%w: %s: not an ECDSA key", ErrBadPEM, path)
		}
		return ek, nil
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrBadPEM, path, err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("%w: %s: unexpected block %q", ErrBadPEM, path, blk.Type)
}

// LoadCert reads a certificate and its key and checks that they match.
func LoadCert(certFile, keyFile string) (*Cert, error) {
	c, err := LoadCertificate(certFile)
	if err != nil {
		return nil, err
	}
	k, err := LoadKey(keyFile)
	if err != nil {
		return nil, err
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(k.Public()) {
		return nil, fmt.Errorf("%w: %s does not belong to %s", ErrBadPEM, keyFile, certFile)
	}
	return &Cert{Cert: c, Key: k}, nil
}
