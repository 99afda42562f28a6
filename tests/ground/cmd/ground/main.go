// Command ground is Outbound's local test ground: embedded etcd, the real kube-apiserver and
// kube-controller-manager, an OCI registry, a local node that runs pods (registry images with
// runc, mapped images as processes), and S3 servers.
//
// One binary plays every part: `ground up` supervises; `ground kube-apiserver ...`,
// `ground kube-controller-manager ...` and `ground kubectl ...` (or the binary called as
// `kubectl`) are the upstream commands; `ground exec-container SPEC` is the container shim.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	_ "time/tzdata"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"

	"outbound.dev/ground/internal/cluster"
	"outbound.dev/ground/internal/node"
	"outbound.dev/ground/internal/registry"
	"outbound.dev/ground/internal/s3"
)

func main() {
	if filepath.Base(os.Args[0]) == "kubectl" {
		runKubectl(os.Args)
		return
	}
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: ground up|kube-apiserver|kube-controller-manager|kubectl|exec-container ...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "kube-apiserver":
		cmd := apiserver.NewAPIServerCommand()
		cmd.SetArgs(os.Args[2:])
		os.Exit(cli.Run(cmd))
	case "kube-controller-manager":
		cmd := controllermanager.NewControllerManagerCommand()
		cmd.SetArgs(os.Args[2:])
		os.Exit(cli.Run(cmd))
	case "kubectl":
		runKubectl(append([]string{"kubectl"}, os.Args[2:]...))
	case "exec-container":
		if err := node.RunShim(os.Args[2]); err != nil {
			fmt.Fprintf(os.Stderr, "ground: failed to start container: %v\n", err)
			os.Exit(128)
		}
	case "up":
		if err := up(os.Args[2:]); err != nil {
			log.Printf("ground: %v", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintf(os.Stderr, "ground: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}

func runKubectl(args []string) {
	os.Args = args
	logs.GlogSetter(kubectlcmd.GetLogVerbosity(args)) // nolint:errcheck
	command := kubectlcmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		kubectlutil.CheckErr(err)
	}
}

// up starts everything, writes the env file and the ready marker, and supervises until SIGTERM.
func up(args []string) error {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	state := fs.String("state", "", "state folder (wiped at start)")
	toolsBin := fs.String("tools-bin", "", "folder with versitygw, moto_server, helm, s5cmd, rclone, aws")
	python := fs.String("python", "", "python of the tools' venv")
	bootstrap := fs.String("moto-bootstrap", "", "moto bootstrap script")
	s3Data := fs.String("s3-data", "", "versitygw's data folder (default: STATE/s3)")
	imageLayout := fs.String("image-layout", "", "OCI image layout of the operator's image, pushed to the ground's registry as outbound")
	busyboxLayout := fs.String("busybox-layout", "", "OCI image layout of a busybox image for test containers, pushed as busybox")
	runc := fs.String("runc", "", "runc, which runs the images the images file does not map")
	_ = fs.Parse(args)
	if *state == "" || *toolsBin == "" {
		return fmt.Errorf("--state and --tools-bin are required")
	}
	stateDir, _ := filepath.Abs(*state)
	pidDir := filepath.Join(stateDir, "pids")
	for _, d := range []string{pidDir, filepath.Join(stateDir, "logs"), filepath.Join(stateDir, "bin")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	started := time.Now()

	c, err := cluster.Start(ctx, stateDir, pidDir)
	if err != nil {
		return err
	}
	defer c.Stop()
	log.Printf("ground: control plane ready at %s in %s", c.APIServer, time.Since(started).Round(time.Millisecond))

	data := *s3Data
	if data == "" {
		data = filepath.Join(stateDir, "s3")
	}
	ports := make([]int, 5)
	for i := range ports {
		if ports[i], err = cluster.FreePort(); err != nil {
			return err
		}
	}
	servers, err := s3.Start(s3.Options{StateDir: stateDir, ToolsBin: *toolsBin, Python: *python, BootstrapPy: *bootstrap,
		PidDir: pidDir, VersityPort: ports[0], VersityAdmin: ports[1], MotoPort: ports[2], DataDir: data})
	if err != nil {
		return err
	}
	defer servers.Stop()
	log.Printf("ground: S3 servers ready (versitygw %s, moto %s)", servers.Endpoint, servers.MotoEndpoint)
	// versitygw over HTTPS too, with a certificate from the ground's own CA: an S3-compatible
	// endpoint of a private CA, which destinations trust through their caBundle.
	tlsFront, err := httpsFront(ports[4], c.PKI.ServingCert, c.PKI.ServingKey, strings.TrimPrefix(servers.Endpoint, "http://"))
	if err != nil {
		return err
	}
	defer tlsFront.Close()
	tlsEndpoint := fmt.Sprintf("https://127.0.0.1:%d", ports[4])

	// The registry serves the operator's image by digest, as a cluster would pull it.
	reg, err := registry.Start(filepath.Join(stateDir, "registry"), ports[3])
	if err != nil {
		return err
	}
	defer reg.Stop()
	imageRepository := reg.Host + "/outbound"
	imageDigest := ""
	if *imageLayout != "" {
		if imageDigest, err = reg.PushLayout(ctx, *imageLayout, "outbound", "ground"); err != nil {
			return err
		}
		log.Printf("ground: pushed %s@%s", imageRepository, imageDigest)
	}
	busyboxImage := ""
	if *busyboxLayout != "" {
		digest, err := reg.PushLayout(ctx, *busyboxLayout, "busybox", "ground")
		if err != nil {
			return err
		}
		busyboxImage = reg.Host + "/busybox@" + digest
	}

	restCfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return err
	}
	restCfg.QPS, restCfg.Burst = 200, 400
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return err
	}
	self, _ := os.Executable()
	binDir := filepath.Join(stateDir, "bin")
	_ = os.Symlink(self, filepath.Join(binDir, "kubectl"))
	for _, t := range []string{"helm", "s5cmd", "rclone", "aws", "versitygw", "prometheus", "promtool", "runc", "crane"} {
		if p, err := filepath.EvalSymlinks(filepath.Join(*toolsBin, t)); err == nil {
			_ = os.Symlink(p, filepath.Join(binDir, t))
		}
	}
	apiURL, err := url.Parse(c.APIServer)
	if err != nil {
		return err
	}
	apiPort, _ := strconv.Atoi(apiURL.Port())
	nodeName := "ground-node"
	imagesFile := filepath.Join(stateDir, "images.json")
	if _, err := os.Stat(imagesFile); err != nil {
		_ = os.WriteFile(imagesFile, []byte("{}\n"), 0o644)
	}
	// Pods find kubectl and the S3 tools on their PATH, as they would in a tools image.
	_ = os.Setenv("PATH", filepath.Join(stateDir, "bin")+":"+os.Getenv("PATH"))
	n := node.New(node.Config{Name: nodeName, StateDir: stateDir, APIServer: c.APIServer, CAFile: c.PKI.CACert, ImagesFile: imagesFile, PidDir: pidDir, Runc: *runc,
		ForwardPorts: append([]int{apiPort, ports[4]}, ports[:3]...)}, client)
	nodeDone := make(chan error, 1)
	go func() { nodeDone <- n.Run(ctx) }()

	if err := waitControllers(ctx, client); err != nil {
		return err
	}

	env := []string{
		"KUBECONFIG=" + c.Kubeconfig,
		"S3_ENDPOINT=" + servers.Endpoint,
		"S3_ADMIN_ENDPOINT=" + servers.AdminEndpoint,
		"S3_TLS_ENDPOINT=" + tlsEndpoint,
		"GROUND_CA_FILE=" + c.PKI.CACert,
		"S3_ACCESS_KEY=" + servers.AccessKey,
		"S3_SECRET_KEY=" + servers.SecretKey,
		"S3_REGION=" + servers.Region,
		"MOTO_ENDPOINT=" + servers.MotoEndpoint,
		"MOTO_ACCESS_KEY=" + servers.MotoAccessKey,
		"MOTO_SECRET_KEY=" + servers.MotoSecretKey,
		"GROUND_STATE=" + stateDir,
		"GROUND_NODE=" + nodeName,
		"GROUND_IMAGES=" + imagesFile,
		"GROUND_API_SERVER=" + c.APIServer,
		"GROUND_AUDIT_LOG=" + c.AuditLog,
		"GROUND_REGISTRY=" + reg.Host,
		"GROUND_IMAGE_REPOSITORY=" + imageRepository,
	}
	if imageDigest != "" {
		env = append(env, "GROUND_IMAGE_DIGEST="+imageDigest, "GROUND_IMAGE="+imageRepository+"@"+imageDigest)
	}
	if busyboxImage != "" {
		env = append(env, "GROUND_BUSYBOX_IMAGE="+busyboxImage)
	}
	var sb strings.Builder
	sb.WriteString("# Written by `ground up`: source it to talk to the ground.\n")
	for _, kv := range env {
		i := strings.Index(kv, "=")
		fmt.Fprintf(&sb, "export %s='%s'\n", kv[:i], kv[i+1:])
	}
	fmt.Fprintf(&sb, "export PATH='%s':\"$PATH\"\n", binDir)
	if err := os.WriteFile(filepath.Join(stateDir, "env"), []byte(sb.String()), 0o600); err != nil {
		return err
	}
	_ = os.WriteFile(filepath.Join(stateDir, "ready"), []byte(time.Now().Format(time.RFC3339)), 0o644)
	log.Printf("ground: ready in %s; env in %s", time.Since(started).Round(time.Millisecond), filepath.Join(stateDir, "env"))

	select {
	case <-ctx.Done():
	case err := <-nodeDone:
		if err != nil {
			log.Printf("ground: node stopped: %v", err)
		}
	}
	log.Printf("ground: stopping")
	_ = os.Remove(filepath.Join(stateDir, "ready"))
	cancel()
	select {
	case <-nodeDone:
	case <-time.After(15 * time.Second):
	}
	return nil
}

// waitControllers waits until the controller manager has done its first work: the default
// namespace has its service account and the root CA config map, so pods can be admitted.
func waitControllers(ctx context.Context, client kubernetes.Interface) error {
	deadline := time.Now().Add(120 * time.Second)
	for time.Now().Before(deadline) {
		_, errSA := client.CoreV1().ServiceAccounts(corev1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		_, errCM := client.CoreV1().ConfigMaps(corev1.NamespaceDefault).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		if errSA == nil && errCM == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
	return fmt.Errorf("kube-controller-manager did not create the default service account in 120s")
}

// httpsFront serves TLS on 127.0.0.1:port with the certificate in certFile (for 127.0.0.1,
// signed by the ground's CA) and passes each connection's bytes to upstream (plain HTTP).
func httpsFront(port int, certFile, keyFile, upstream string) (net.Listener, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("the HTTPS front's certificate: %w", err)
	}
	ln, err := tls.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port),
		&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				up, err := net.Dial("tcp4", upstream)
				if err != nil {
					return
				}
				defer up.Close()
				// Either side ending ends both: an HTTP client or server closing its half.
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(up, conn); done <- struct{}{} }()
				go func() { _, _ = io.Copy(conn, up); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	return ln, nil
}
