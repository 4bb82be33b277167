// Package deps pins the module dependencies while the packages that use them
// are being written in parallel. Removed once every dependency has a real user.
package deps

import (
	_ "github.com/BurntSushi/toml"
	_ "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "golang.org/x/sync/errgroup"
	_ "golang.org/x/term"
	_ "software.sslmate.com/src/go-pkcs12"
)
