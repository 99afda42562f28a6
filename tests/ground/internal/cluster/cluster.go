// Package cluster runs the ground's control plane: embedded etcd, and the real kube-apiserver and
// kube-controller-manager as child processes of the ground binary itself.
package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"outbound.dev/ground/internal/pki"
	"outbound.dev/ground/internal/supervise"
)

// The controllers the ground runs: what Jobs, Deployments, namespaces, service accounts and
// volumes need. The node-lifecycle controller is left out on purpose: the local node is always up.
var Controllers = []string{
	"job-controller",
	"garbage-collector-controller",
	"namespace-controller",
	"serviceaccount-controller",
	"serviceaccount-token-controller",
	"root-ca-certificate-publisher-controller",
	"ttl-after-finished-controller",
	"persistentvolume-binder-controller",
	"persistentvolumeclaim-protection-controller",
	"persistentvolume-protection-controller",
	"deployment-controller",
	"replicaset-controller",
	"statefulset-controller",
	"disruption-controller",
	"pod-garbage-collector-controller",
	"clusterrole-aggregation-controller",
	"endpointslice-controller",
	"cronjob-controller",
	"resourcequota-controller",
}

// auditPolicy records service accounts' requests, and everyone's writes to Outbound's resources
// (so a test can count the writes a delivery takes, whoever makes them), at Metadata level (who,
// verb, resource, code; no bodies) when the response completes, and also when it starts for a
// watch (one auditID).
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  userGroups: ["system:serviceaccounts"]
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
  resources: [{group: outbound.dev}]
- level: None
`

// Cluster is a running control plane.
type Cluster struct {
	StateDir   string
	PKI        *pki.Files
	APIServer  string // https://127.0.0.1:PORT
	Kubeconfig string // admin kubeconfig
	Issuer     string
	AuditLog   string // JSON lines, one per request of a service account (see auditPolicy)

	etcd     *embed.Etcd
	children []*supervise.Proc
}

// FreePort asks the kernel for a free loopback port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start brings up etcd, the API server and the controller manager, and waits until the API
// server answers /readyz.
func Start(ctx context.Context, stateDir string, pidDir string) (*Cluster, error) {
	files, err := pki.Ensure(filepath.Join(stateDir, "pki"))
	if err != nil {
		return nil, fmt.Errorf("failed to make certificates: %w", err)
	}
	c := &Cluster{StateDir: stateDir, PKI: files, Issuer: "https://kubernetes.default.svc.cluster.local"}

	clientPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	peerPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	cfg := embed.NewConfig()
	cfg.Name = "ground"
	cfg.Dir = filepath.Join(stateDir, "etcd")
	cfg.LogLevel = "error"
	// The ground's data is disposable; skipping fsync makes every API write much faster.
	cfg.UnsafeNoFsync = true
	clientURL, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", clientPort))
	peerURL, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", peerPort))
	cfg.ListenClientUrls = []url.URL{*clientURL}
	cfg.AdvertiseClientUrls = []url.URL{*clientURL}
	cfg.ListenPeerUrls = []url.URL{*peerURL}
	cfg.AdvertisePeerUrls = []url.URL{*peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("failed to start etcd: %w", err)
	}
	c.etcd = e
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("etcd did not become ready in 60s")
	}

	apiPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	c.APIServer = fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	logDir := filepath.Join(stateDir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	// Requests made with service-account tokens (operators and upload pods, not the admin, the
	// controller manager or the node) are audited, so a benchmark can count exactly what one
	// client asked of the API server; everything else is not recorded, which keeps it cheap.
	c.AuditLog = filepath.Join(logDir, "audit.log")
	policy := filepath.Join(stateDir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o644); err != nil {
		return nil, err
	}
	apiArgs := []string{
		"--etcd-servers=" + clientURL.String(),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", apiPort),
		"--cert-dir=" + filepath.Join(stateDir, "apiserver-certs"),
		"--tls-cert-file=" + files.ServingCert,
		"--tls-private-key-file=" + files.ServingKey,
		"--client-ca-file=" + files.CACert,
		"--service-account-issuer=" + c.Issuer,
		"--service-account-key-file=" + files.SAPublicKey,
		"--service-account-signing-key-file=" + files.SAPrivateKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=RBAC",
		// A loopback advertise address cannot be written into the kubernetes Endpoints.
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"--profiling=false",
		"--enable-garbage-collector=true",
		"--audit-policy-file=" + policy,
		"--audit-log-path=" + c.AuditLog,
		"--audit-log-format=json",
		"--audit-log-maxsize=200",
		"--audit-log-maxbackup=1",
		"--v=1",
	}
	if err := c.spawn("kube-apiserver", apiArgs, logDir, pidDir); err != nil {
		return nil, err
	}
	c.Kubeconfig = filepath.Join(stateDir, "kubeconfig")
	if err := WriteKubeconfig(c.Kubeconfig, c.APIServer, files.CACert, Auth{CertFile: files.AdminCert, KeyFile: files.AdminKey}); err != nil {
		return nil, err
	}
	if err := c.waitReady(ctx, 120*time.Second); err != nil {
		c.Stop()
		return nil, err
	}

	cmPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	cmArgs := []string{
		"--kubeconfig=" + c.Kubeconfig,
		"--authentication-kubeconfig=" + c.Kubeconfig,
		"--authorization-kubeconfig=" + c.Kubeconfig,
		"--controllers=" + strings.Join(Controllers, ","),
		"--service-account-private-key-file=" + files.SAPrivateKey,
		"--root-ca-file=" + files.CACert,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", cmPort),
		"--cert-dir=" + filepath.Join(stateDir, "cm-certs"),
		// Quick reactions keep tests short: the ground is one small cluster.
		"--concurrent-job-syncs=10",
		"--v=1",
	}
	if err := c.spawn("kube-controller-manager", cmArgs, logDir, pidDir); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) spawn(name string, args []string, logDir, pidDir string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	p, err := supervise.Start(name, func() *exec.Cmd {
		return exec.Command(self, append([]string{name}, args...)...)
	}, logDir, pidDir)
	if err != nil {
		return err
	}
	c.children = append(c.children, p)
	return nil
}

func (c *Cluster) waitReady(ctx context.Context, timeout time.Duration) error {
	client, err := AdminHTTPClient(c.PKI)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return err
		}
		resp, err := client.Get(c.APIServer + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(300 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver not ready after %s (last: %s); see %s", timeout, last, filepath.Join(c.StateDir, "logs", "kube-apiserver.log"))
}

// AdminHTTPClient is an HTTP client that authenticates as the ground's admin.
func AdminHTTPClient(files *pki.Files) (*http.Client, error) {
	cert, err := tls.LoadX509KeyPair(files.AdminCert, files.AdminKey)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(files.CACert)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}, nil
}

// Stop ends the child processes (SIGTERM, then SIGKILL) and etcd.
func (c *Cluster) Stop() {
	for i := len(c.children) - 1; i >= 0; i-- {
		c.children[i].Stop(10 * time.Second)
	}
	if c.etcd != nil {
		c.etcd.Close()
	}
}

// Auth is how a kubeconfig authenticates: a client certificate or a bearer token file.
type Auth struct {
	CertFile, KeyFile string
	TokenFile         string
	// Namespace is the context's default namespace ("default" when empty), as a pod's own
	// namespace is for in-cluster clients.
	Namespace string
}

// WriteKubeconfig writes a single-context kubeconfig.
func WriteKubeconfig(path, server, caFile string, auth Auth) error {
	user := ""
	if auth.TokenFile != "" {
		user = fmt.Sprintf("    tokenFile: %s\n", auth.TokenFile)
	} else {
		user = fmt.Sprintf("    client-certificate: %s\n    client-key: %s\n", auth.CertFile, auth.KeyFile)
	}
	ns := auth.Namespace
	if ns == "" {
		ns = "default"
	}
	content := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: ground
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: ground
  user:
%scontexts:
- name: ground
  context:
    cluster: ground
    user: ground
    namespace: %s
current-context: ground
`, server, caFile, user, ns)
	return os.WriteFile(path, []byte(content), 0o600)
}
