package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// expander expands references for one connector file.
type expander struct {
	dir       string
	lookupEnv func(string) (string, bool)
}

// expand returns s with its references replaced, whether it held any, and one message per reference that
// could not be resolved. The messages name the reference, never the text it stands for.
func (x *expander) expand(s string) (out string, refs bool, problems []string) {
	if !strings.Contains(s, "${") {
		return s, false, nil
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			break
		}
		if i > 0 && s[i-1] == '$' {
			// $${ is a literal ${.
			b.WriteString(s[:i-1])
			b.WriteString("${")
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		rest := s[i+2:]
		kind, arg, isRef := strings.Cut(rest, ":")
		if !isRef || (kind != "env" && kind != "file") {
			b.WriteString("${")
			s = rest
			continue
		}
		refs = true
		end := strings.IndexByte(arg, '}')
		if end < 0 {
			problems = append(problems, fmt.Sprintf("unterminated reference ${%s:…: add the closing '}'", kind))
			break
		}
		arg, s = arg[:end], arg[end+1:]
		ref := "${" + kind + ":" + arg + "}"
		if arg == "" {
			problems = append(problems, fmt.Sprintf("empty reference %s: want ${env:NAME} or ${file:PATH}", ref))
			continue
		}
		var (
			val string
			err error
		)
		if kind == "env" {
			val, err = x.env(arg)
		} else {
			val, err = x.file(arg)
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", ref, err))
			continue
		}
		b.WriteString(val)
	}
	return b.String(), refs, problems
}

func (x *expander) env(name string) (string, error) {
	lookup := x.lookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	v, ok := lookup(name)
	if !ok {
		return "", fmt.Errorf("environment variable %s is not set", name)
	}
	return v, nil
}

func (x *expander) file(name string) (string, error) {
	path := name
	if !filepath.IsAbs(path) {
		path = filepath.Join(x.dir, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return "", fmt.Errorf("file %s does not exist", path)
		case errors.As(err, &pe):
			return "", fmt.Errorf("cannot read file %s: %v", path, pe.Err)
		}
		return "", fmt.Errorf("cannot read file %s: %v", path, err)
	}
	s, trimmed := strings.CutSuffix(string(data), "\n")
	if trimmed {
		s = strings.TrimSuffix(s, "\r")
	}
	return s, nil
}
