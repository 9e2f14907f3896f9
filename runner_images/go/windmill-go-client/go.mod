module github.com/windmill-labs/windmill-go-client

go 1.22
