// Command local-kubelet is a kubelet for end-to-end tests: it registers a Node and runs each
// container of each pod bound to it as a host process in the pod's own mount namespace.
//
// Per pod: a holder process (`unshare --mount --propagation private sleep infinity`) owns the
// mount namespace; ConfigMap, Secret, emptyDir and PVC volumes are bind-mounted at their mount
// paths inside it; the pod gets its own loopback IP (127.0.x.y), reported in its status and given
// to the containers as POD_IP; exec readiness and liveness probes run inside the namespace; exec
// from the API server runs there too, with real exit codes. Images are ignored: commands are the
// host's binaries. Deleted pods get SIGTERM, then SIGKILL after the grace period.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	vklog "github.com/virtual-kubelet/virtual-kubelet/log"
	vkslog "github.com/virtual-kubelet/virtual-kubelet/log/slog"
	"github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
	utilexec "k8s.io/utils/exec"
)

type container struct {
	spec     corev1.Container
	cmd      *exec.Cmd
	done     chan struct{}
	exitCode int
	restarts int32
	ready    bool
	started  time.Time
	failures int // consecutive liveness failures
}

type pod struct {
	mu         sync.Mutex
	obj        *corev1.Pod
	ip         string
	dir        string
	holder     *exec.Cmd
	containers []*container
	stop       chan struct{}
	deleting   bool
}

type provider struct {
	cfg      nodeutil.ProviderConfig
	client   kubernetes.Interface
	state    string
	ipPrefix map[string]string // StatefulSet name -> "127.0.x"
	mu       sync.Mutex
	pods     map[string]*pod // namespace/name
	usedIPs  map[string]bool
	notify   func(*corev1.Pod)
}

func key(ns, name string) string { return ns + "/" + name }

// ip gives StatefulSet pods a stable address by ordinal (127.0.x.(10+n)); others the next free one.
func (p *provider) ip(pd *corev1.Pod) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, o := range pd.OwnerReferences {
		if o.Kind != "StatefulSet" {
			continue
		}
		prefix, ok := p.ipPrefix[o.Name]
		i := strings.LastIndex(pd.Name, "-")
		if ok && i > 0 {
			if n, err := strconv.Atoi(pd.Name[i+1:]); err == nil {
				ip := fmt.Sprintf("%s.%d", prefix, 10+n)
				p.usedIPs[ip] = true
				return ip, nil
			}
		}
	}
	for n := 10; n < 250; n++ {
		ip := fmt.Sprintf("127.0.59.%d", n)
		if !p.usedIPs[ip] {
			p.usedIPs[ip] = true
			return ip, nil
		}
	}
	return "", errors.New("no free pod IP")
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %v: %v: %s", name, args, err, out)
	}
	return nil
}

// nsMembers lists the processes in the mount namespace of holder, other than holder.
func nsMembers(holder int) []int {
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", holder))
	if err != nil {
		return nil
	}
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == holder {
			continue
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && l == ns {
			out = append(out, pid)
		}
	}
	return out
}

// writeFiles fills a volume folder with one file per key, as ConfigMap and Secret volumes are.
func writeFiles(dir string, files map[string][]byte) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for k, val := range files {
		if err := os.WriteFile(filepath.Join(dir, k), val, 0o644); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// volumePath materialises a pod volume on the host and returns its folder.
func (p *provider) volumePath(pd *pod, v corev1.Volume) (string, error) {
	ns := pd.obj.Namespace
	switch {
	case v.ConfigMap != nil:
		cm, err := p.cfg.ConfigMaps.ConfigMaps(ns).Get(v.ConfigMap.Name)
		if err != nil {
			return "", err
		}
		files := map[string][]byte{}
		for k, val := range cm.Data {
			files[k] = []byte(val)
		}
		return writeFiles(filepath.Join(pd.dir, "volumes", v.Name), files)
	case v.Secret != nil:
		s, err := p.cfg.Secrets.Secrets(ns).Get(v.Secret.SecretName)
		if err != nil {
			return "", err
		}
		return writeFiles(filepath.Join(pd.dir, "volumes", v.Name), s.Data)
	case v.EmptyDir != nil:
		dir := filepath.Join(pd.dir, "volumes", v.Name)
		return dir, os.MkdirAll(dir, 0o755)
	case v.PersistentVolumeClaim != nil:
		// outlives the pod, shared by every pod naming the claim (ReadWriteMany as NFS would be)
		dir := filepath.Join(p.state, "pvc", ns, v.PersistentVolumeClaim.ClaimName)
		return dir, os.MkdirAll(dir, 0o755)
	}
	return "", fmt.Errorf("volume %s: unsupported type", v.Name)
}

func (p *provider) env(pd *pod, c corev1.Container) []string {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "POD_IP=" + pd.ip,
		"POD_NAME=" + pd.obj.Name, "POD_NAMESPACE=" + pd.obj.Namespace, "HOSTNAME=" + pd.obj.Name}
	for _, e := range c.Env {
		val := e.Value
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			switch e.ValueFrom.FieldRef.FieldPath {
			case "status.podIP":
				val = pd.ip
			case "metadata.name":
				val = pd.obj.Name
			case "metadata.namespace":
				val = pd.obj.Namespace
			}
		}
		env = append(env, e.Name+"="+val)
	}
	return env
}

// inPod builds a command that runs argv inside the pod's mount namespace with the container's env.
func (p *provider) inPod(pd *pod, c corev1.Container, argv []string) *exec.Cmd {
	args := []string{"-t", strconv.Itoa(pd.holder.Process.Pid), "-m", "--", "env", "-i"}
	args = append(args, p.env(pd, c)...)
	args = append(args, argv...)
	return exec.Command("nsenter", args...)
}

func (p *provider) CreatePod(ctx context.Context, obj *corev1.Pod) error {
	ip, err := p.ip(obj)
	if err != nil {
		return err
	}
	pd := &pod{obj: obj.DeepCopy(), ip: ip, stop: make(chan struct{}),
		dir: filepath.Join(p.state, "pods", obj.Namespace+"_"+obj.Name+"_"+string(obj.UID))}
	if err := os.MkdirAll(filepath.Join(pd.dir, "logs"), 0o755); err != nil {
		return err
	}
	pd.holder = exec.Command("unshare", "--mount", "--propagation", "private", "sleep", "infinity")
	pd.holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := pd.holder.Start(); err != nil {
		return err
	}
	go pd.holder.Wait() //nolint:errcheck
	own, _ := os.Readlink("/proc/self/ns/mnt")
	for i := 0; ; i++ {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pd.holder.Process.Pid)); err == nil && l != own {
			break
		}
		if i > 100 {
			return errors.New("pod mount namespace did not appear")
		}
		time.Sleep(20 * time.Millisecond)
	}
	vols := map[string]string{}
	for _, v := range obj.Spec.Volumes {
		path, err := p.volumePath(pd, v)
		if err != nil {
			return err
		}
		vols[v.Name] = path
	}
	pid := strconv.Itoa(pd.holder.Process.Pid)
	for _, c := range obj.Spec.Containers {
		for _, m := range c.VolumeMounts {
			src := vols[m.Name]
			if src == "" {
				return fmt.Errorf("volume %s not found", m.Name)
			}
			if m.SubPath != "" {
				src = filepath.Join(src, m.SubPath)
			}
			st, err := os.Stat(src)
			if err != nil {
				return fmt.Errorf("mount %s: %v", m.MountPath, err)
			}
			// the mount point must exist in the (shared) host file system
			if st.IsDir() {
				if err := os.MkdirAll(m.MountPath, 0o755); err != nil {
					return err
				}
			} else if _, err := os.Stat(m.MountPath); err != nil {
				_ = os.MkdirAll(filepath.Dir(m.MountPath), 0o755)
				if f, err := os.OpenFile(m.MountPath, os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
					f.Close()
				}
			}
			if err := run("nsenter", "-t", pid, "-m", "--", "mount", "--bind", src, m.MountPath); err != nil {
				return err
			}
		}
		pd.containers = append(pd.containers, &container{spec: c})
	}
	p.mu.Lock()
	p.pods[key(obj.Namespace, obj.Name)] = pd
	p.mu.Unlock()
	for _, c := range pd.containers {
		if err := p.start(pd, c); err != nil {
			return err
		}
	}
	go p.supervise(pd)
	log.Printf("pod %s/%s running at %s", obj.Namespace, obj.Name, ip)
	return nil
}

func (p *provider) start(pd *pod, c *container) error {
	argv := append(append([]string{}, c.spec.Command...), c.spec.Args...)
	if len(argv) == 0 {
		return fmt.Errorf("container %s: command required (images are not run)", c.spec.Name)
	}
	logf, err := os.OpenFile(filepath.Join(pd.dir, "logs", c.spec.Name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := p.inPod(pd, c.spec, argv)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	c.cmd, c.done, c.started, c.ready, c.failures = cmd, make(chan struct{}), time.Now(), false, 0
	done := c.done
	go func() {
		err := cmd.Wait()
		logf.Close()
		pd.mu.Lock()
		c.exitCode = 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			c.exitCode = ee.ExitCode()
		}
		pd.mu.Unlock()
		close(done)
	}()
	return nil
}

func probe(p *provider, pd *pod, c corev1.Container, pr *corev1.Probe) bool {
	if pr == nil || pr.Exec == nil {
		return true
	}
	timeout := time.Duration(max(pr.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := p.inPod(pd, c, pr.Exec.Command)
	cmd = exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	return cmd.Run() == nil
}

// supervise runs probes, restarts exited containers, and reports status changes.
func (p *provider) supervise(pd *pod) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := map[string]time.Time{}
	for {
		select {
		case <-pd.stop:
			return
		case <-tick.C:
		}
		changed := false
		for _, c := range pd.containers {
			select {
			case <-c.done:
				if pd.deleting {
					continue
				}
				pd.mu.Lock()
				c.restarts++
				c.ready = false
				pd.mu.Unlock()
				log.Printf("pod %s: container %s exited (%d), restarting", pd.obj.Name, c.spec.Name, c.exitCode)
				_ = p.start(pd, c)
				changed = true
				continue
			default:
			}
			now := time.Now()
			if r := c.spec.ReadinessProbe; r != nil && now.Sub(last[c.spec.Name+"/r"]) >= time.Duration(max(r.PeriodSeconds, 1))*time.Second &&
				now.Sub(c.started) >= time.Duration(r.InitialDelaySeconds)*time.Second {
				last[c.spec.Name+"/r"] = now
				ok := probe(p, pd, c.spec, r)
				pd.mu.Lock()
				if ok != c.ready {
					c.ready, changed = ok, true
				}
				pd.mu.Unlock()
			} else if r == nil && !c.ready {
				pd.mu.Lock()
				c.ready, changed = true, true
				pd.mu.Unlock()
			}
			if l := c.spec.LivenessProbe; l != nil && now.Sub(last[c.spec.Name+"/l"]) >= time.Duration(max(l.PeriodSeconds, 1))*time.Second &&
				now.Sub(c.started) >= time.Duration(l.InitialDelaySeconds)*time.Second {
				last[c.spec.Name+"/l"] = now
				if probe(p, pd, c.spec, l) {
					c.failures = 0
				} else if c.failures++; c.failures >= int(max(l.FailureThreshold, 1)) {
					log.Printf("pod %s: container %s failed its liveness probe, killing it", pd.obj.Name, c.spec.Name)
					_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
				}
			}
		}
		if changed && p.notify != nil {
			p.notify(p.withStatus(pd))
		}
	}
}

func (p *provider) withStatus(pd *pod) *corev1.Pod {
	pd.mu.Lock()
	defer pd.mu.Unlock()
	out := pd.obj.DeepCopy()
	allReady := true
	var statuses []corev1.ContainerStatus
	for _, c := range pd.containers {
		allReady = allReady && c.ready
		running := true
		select {
		case <-c.done:
			running = false
		default:
		}
		st := corev1.ContainerStatus{Name: c.spec.Name, Image: c.spec.Image, ImageID: "host", Ready: c.ready,
			RestartCount: c.restarts, Started: &running, ContainerID: fmt.Sprintf("host://%d", c.cmd.Process.Pid)}
		if running {
			st.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(c.started)}
		} else {
			st.State.Terminated = &corev1.ContainerStateTerminated{ExitCode: int32(c.exitCode)}
		}
		statuses = append(statuses, st)
	}
	cond := func(t corev1.PodConditionType, ok bool) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
		}
		return corev1.PodCondition{Type: t, Status: s, LastTransitionTime: metav1.Now()}
	}
	start := metav1.NewTime(pd.containers[0].started)
	out.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, HostIP: "127.0.0.1", PodIP: pd.ip, PodIPs: []corev1.PodIP{{IP: pd.ip}},
		StartTime: &start, ContainerStatuses: statuses,
		Conditions: []corev1.PodCondition{cond(corev1.PodScheduled, true), cond(corev1.PodInitialized, true),
			cond(corev1.ContainersReady, allReady), cond(corev1.PodReady, allReady)},
	}
	return out
}

func (p *provider) UpdatePod(ctx context.Context, obj *corev1.Pod) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pd, ok := p.pods[key(obj.Namespace, obj.Name)]; ok {
		pd.mu.Lock()
		pd.obj = obj.DeepCopy()
		pd.mu.Unlock()
	}
	return nil
}

// DeletePod stops the pod like a kubelet: SIGTERM, the grace period, then SIGKILL for all.
func (p *provider) DeletePod(ctx context.Context, obj *corev1.Pod) error {
	p.mu.Lock()
	pd, ok := p.pods[key(obj.Namespace, obj.Name)]
	p.mu.Unlock()
	if !ok {
		return nil
	}
	pd.mu.Lock()
	pd.deleting = true
	pd.mu.Unlock()
	grace := int64(30)
	if obj.Spec.TerminationGracePeriodSeconds != nil {
		grace = *obj.Spec.TerminationGracePeriodSeconds
	}
	if obj.DeletionGracePeriodSeconds != nil {
		grace = *obj.DeletionGracePeriodSeconds
	}
	for _, c := range pd.containers {
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(time.Duration(grace) * time.Second)
	for time.Now().Before(deadline) && len(nsMembers(pd.holder.Process.Pid)) > 0 {
		time.Sleep(100 * time.Millisecond)
	}
	for _, pid := range nsMembers(pd.holder.Process.Pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	_ = syscall.Kill(-pd.holder.Process.Pid, syscall.SIGKILL)
	close(pd.stop)
	p.mu.Lock()
	delete(p.pods, key(obj.Namespace, obj.Name))
	delete(p.usedIPs, pd.ip)
	p.mu.Unlock()
	_ = os.RemoveAll(pd.dir)
	log.Printf("pod %s/%s deleted", obj.Namespace, obj.Name)
	// like a real kubelet: once the containers are gone, remove the object at once (virtual-kubelet
	// alone waits out the whole grace period), guarded by UID so a recreated pod is never touched
	go func() {
		zero := int64(0)
		uid := obj.UID
		_ = p.client.CoreV1().Pods(obj.Namespace).Delete(context.Background(), obj.Name,
			metav1.DeleteOptions{GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid}})
	}()
	if p.notify != nil {
		gone := obj.DeepCopy()
		gone.Status.Phase = corev1.PodSucceeded
		p.notify(gone)
	}
	return nil
}

// shutdown stops every pod, so that nothing outlives the kubelet in a test run.
func (p *provider) shutdown() {
	p.mu.Lock()
	var all []*pod
	for _, pd := range p.pods {
		all = append(all, pd)
	}
	p.mu.Unlock()
	for _, pd := range all {
		pd.mu.Lock()
		pd.deleting = true
		pd.mu.Unlock()
		for _, pid := range nsMembers(pd.holder.Process.Pid) {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for _, pd := range all {
		for time.Now().Before(deadline) && len(nsMembers(pd.holder.Process.Pid)) > 0 {
			time.Sleep(50 * time.Millisecond)
		}
		for _, pid := range nsMembers(pd.holder.Process.Pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		_ = syscall.Kill(-pd.holder.Process.Pid, syscall.SIGKILL)
	}
}

func (p *provider) GetPod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	p.mu.Lock()
	pd, ok := p.pods[key(ns, name)]
	p.mu.Unlock()
	if !ok {
		return nil, errNotFound{}
	}
	return p.withStatus(pd), nil
}

func (p *provider) GetPodStatus(ctx context.Context, ns, name string) (*corev1.PodStatus, error) {
	pd, err := p.GetPod(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	return &pd.Status, nil
}

func (p *provider) GetPods(ctx context.Context) ([]*corev1.Pod, error) {
	p.mu.Lock()
	var all []*pod
	for _, pd := range p.pods {
		all = append(all, pd)
	}
	p.mu.Unlock()
	var out []*corev1.Pod
	for _, pd := range all {
		out = append(out, p.withStatus(pd))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (p *provider) NotifyPods(ctx context.Context, f func(*corev1.Pod)) { p.notify = f }

// RunInContainer serves pods/exec: argv runs in the pod's mount namespace; the exit code is
// returned as a CodeExitError, which the API layer turns into the exec Status.
func (p *provider) RunInContainer(ctx context.Context, ns, name, cname string, argv []string, attach api.AttachIO) error {
	p.mu.Lock()
	pd, ok := p.pods[key(ns, name)]
	p.mu.Unlock()
	if !ok {
		return errNotFound{}
	}
	spec := pd.containers[0].spec
	for _, c := range pd.containers {
		if c.spec.Name == cname {
			spec = c.spec
		}
	}
	cmd := p.inPod(pd, spec, argv)
	cmd = exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	if attach.Stdin() != nil {
		cmd.Stdin = attach.Stdin()
	}
	if w := attach.Stdout(); w != nil {
		cmd.Stdout = w
		defer w.Close()
	}
	if w := attach.Stderr(); w != nil {
		cmd.Stderr = w
		defer w.Close()
	}
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return utilexec.CodeExitError{Err: err, Code: ee.ExitCode()}
	}
	return err
}

func (p *provider) AttachToContainer(context.Context, string, string, string, api.AttachIO) error {
	return errors.New("attach is not supported")
}
func (p *provider) GetContainerLogs(_ context.Context, ns, name, c string, _ api.ContainerLogOpts) (io.ReadCloser, error) {
	p.mu.Lock()
	pd, ok := p.pods[key(ns, name)]
	p.mu.Unlock()
	if !ok {
		return nil, errNotFound{}
	}
	return os.Open(filepath.Join(pd.dir, "logs", c+".log"))
}
func (p *provider) GetStatsSummary(context.Context) (*statsv1alpha1.Summary, error) {
	return &statsv1alpha1.Summary{}, nil
}
func (p *provider) GetMetricsResource(context.Context) ([]*dto.MetricFamily, error) { return nil, nil }
func (p *provider) PortForward(context.Context, string, string, int32, io.ReadWriteCloser) error {
	return errors.New("port-forward is not supported")
}

type errNotFound struct{}

func (errNotFound) Error() string  { return "pod not found" }
func (errNotFound) NotFound() bool { return true }

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the API server")
	nodeName := flag.String("node-name", "local", "Node name")
	state := flag.String("state", "", "folder for pod files and PVCs")
	listen := flag.String("listen", "127.0.0.1:10250", "kubelet API address")
	cert := flag.String("tls-cert", "", "serving certificate")
	keyFile := flag.String("tls-key", "", "serving key")
	ips := flag.String("ip-prefix", "", "StatefulSet=127.0.x pairs, comma separated: stable pod IPs by ordinal")
	flag.Parse()
	vklog.L = vkslog.FromSlog(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})))

	restCfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatal(err)
	}
	client := kubernetes.NewForConfigOrDie(restCfg)
	prefixes := map[string]string{}
	for _, kv := range strings.Split(*ips, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			prefixes[k] = v
		}
	}
	mux := http.NewServeMux()
	var prov *provider
	n, err := nodeutil.NewNode(*nodeName, func(cfg nodeutil.ProviderConfig) (nodeutil.Provider, node.NodeProvider, error) {
		cfg.Node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
			{Type: corev1.NodeHostName, Address: *nodeName}}
		_, port, _ := strings.Cut(*listen, ":")
		pn, _ := strconv.Atoi(port)
		cfg.Node.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(pn)
		cfg.Node.Status.Capacity = corev1.ResourceList{}
		cfg.Node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
			Reason: "KubeletReady", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
		prov = &provider{cfg: cfg, client: client, state: *state, ipPrefix: prefixes, pods: map[string]*pod{}, usedIPs: map[string]bool{}}
		return prov, nil, nil
	},
		nodeutil.WithClient(client),
		nodeutil.WithTLSConfig(nodeutil.WithKeyPairFromPath(*cert, *keyFile)),
		nodeutil.AttachProviderRoutes(mux),
		func(c *nodeutil.NodeConfig) error {
			c.HTTPListenAddr = *listen
			// the provider resolves status.podIP and metadata fields itself (vk rejects podIP)
			c.SkipDownwardAPIResolution = true
			c.Handler = mux
			// doveadm director commands can block 20-30 s while a ring member is dead
			c.StreamIdleTimeout = 5 * time.Minute
			c.StreamCreationTimeout = 30 * time.Second
			c.NumWorkers = 4
			return nil
		},
	)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		if err := n.Run(ctx); err != nil {
			log.Fatal(err)
		}
	}()
	if err := n.WaitReady(ctx, time.Minute); err != nil {
		log.Fatal(err)
	}
	log.Printf("node %s ready; kubelet API on %s", *nodeName, *listen)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
		log.Printf("stopping every pod")
		prov.shutdown()
	case <-n.Done():
	}
}
