module palisade.invalid/tests/tools/knp

go 1.24.0

require sigs.k8s.io/kube-network-policies v0.8.0 // indirect
