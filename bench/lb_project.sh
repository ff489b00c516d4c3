# The project of bench/lb.sh, bench/instructions.sh and bench/ab.sh, sourced by each inside its
# private namespaces: SERVICES services of REPLICAS replicas on one network, each service with a
# VIP and a policy that lets in the service before it and svc0's port 5201/tcp.
#
#   lb_sandbox                            # first: tmpfs where netcompose keeps its state, pins
#                                         # and files; lo up
#   lb_project REPLICAS_OF_SVC0 [plain]   # plain: no VIPs (endpoint_mode dnsrr), no x-policy
lb_sandbox() {
  mkdir -p /run/netns /etc/netns /var/lib/netcompose /run/netcompose
  for d in /run/netns /etc/netns /var/lib/netcompose /run/netcompose; do mount -t tmpfs tmpfs "$d"; done
  ip link set lo up
}
lb_project() {
  echo "name: lbbench${2:-}"
  echo "networks: {front: {ipam: {config: [{subnet: 10.90.0.0/16}]}}}"
  echo "services:"
  for i in $(seq 0 $((SERVICES - 1))); do
    r=$REPLICAS; [ "$i" = 0 ] && r=$1
    prev=$(( (i + SERVICES - 1) % SERVICES ))
    echo "  svc$i:"
    echo "    networks: [front]"
    if [ -n "${2:-}" ]; then
      echo "    deploy: {replicas: $r, endpoint_mode: dnsrr}"
    else
      echo "    deploy: {replicas: $r}"
      echo "    x-policy: {ingress: {allow: [\"svc$prev\", \"svc0:5201/tcp\"], deny: [\"0.0.0.0/0\"]}}"
    fi
  done
}
