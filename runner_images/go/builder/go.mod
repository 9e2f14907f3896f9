module kubemill.dev/runner/go/builder

go 1.22

require github.com/windmill-labs/windmill-go-client v0.0.0

replace github.com/windmill-labs/windmill-go-client => ../windmill-go-client
