// Package config reads and validates twinblock's YAML configuration.
//
// A config file lists the volumes a daemon exports and where their bytes
// live:
//
//	listen: 127.0.0.1:10809       # NBD over TCP ("none" to disable)
//	socket: /run/twinblock.sock   # optional NBD unix socket
//	volumes:
//	  - name: vol0                # also the NBD export name
//	    backend:
//	      type: file              # file | mem
//	      path: vol0.img          # relative to the config file
//
// Unknown fields are errors, and every validation error names the field
// (`volumes[0].backend.type: unknown backend "flie"`), wrapped around
// ErrInvalid. Sizes use binary units (see Size).
package config
