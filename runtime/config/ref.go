package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// MaxValueBytes is the largest setting value, in bytes, after its references are expanded: a string's
// length, or a list's or object's size as compact JSON (strings counted without escapes). A larger value
// is an error; ${file:…} reads at most this much of a file.
const MaxValueBytes = 1 << 20

// maxProblemsPerValue bounds the problems reported for one string, so that a hostile value cannot
// produce millions of lines.
const maxProblemsPerValue = 5

// schemes are the reference schemes, in the order messages list them.
var schemes = []string{"env", "file"}

var (
	// schemeRE matches what follows "${" in something written as a reference with a scheme.
	schemeRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.+-]*:`)
	// nameRE matches a ${NAME} written without a scheme.
	nameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// expander expands references for one connector file.
type expander struct {
	dir       string
	lookupEnv func(string) (string, bool)
	// keep: references are recognised (and their syntax checked) but not resolved.
	keep bool
}

// scan is the result of expanding one string.
type scan struct {
	out string
	// refs: the string held a reference (its value is not to be shown).
	refs bool
	// values are what each reference stood for.
	values []string
	// problems are messages about references that could not be resolved and about text that is not
	// allowed ("${vault:x}", "$HOME"); they never contain what a reference stands for.
	problems []string
	// over: the expansion is larger than limit (out is then incomplete).
	over bool
}

// expand expands the references in s, which must not grow past limit bytes. In a secret setting (secret)
// the problems do not quote the text they are about, except well-formed ${env:…} and ${file:…}
// references, which name where a value comes from and are not values.
//
// The rules, left to right:
//   - ${env:NAME} and ${file:PATH} are replaced by what they stand for;
//   - a '$' right after another '$' starts nothing ($$ROOT, $$NOW stay as written), except that $${
//     writes a literal ${ (a longer run of '$' before '{' loses one '$');
//   - any other ${ is an error: ${NAME} (shell syntax, hint ${env:NAME}), ${vault:…} (unknown scheme);
//   - '$' followed by an upper-case name ($HOME, $MONGO_URI: upper-case letters, digits and '_', at
//     least one letter, not starting with a digit, not followed by a lower-case letter) is an error with
//     the hint ${env:NAME}; \$NAME writes a literal $NAME.
func (x *expander) expand(s string, secret bool, limit int) scan {
	if !strings.Contains(s, "$") {
		return scan{out: s, over: len(s) > limit}
	}
	var (
		r scan
		b strings.Builder
	)
	problem := func(format string, args ...any) {
		r.problems = append(r.problems, fmt.Sprintf(format, args...))
	}
	for i := 0; i < len(s) && len(r.problems) < maxProblemsPerValue; {
		if b.Len() > limit {
			r.over = true
			break
		}
		j := strings.IndexAny(s[i:], `$\`)
		if j < 0 {
			b.WriteString(s[i:])
			break
		}
		b.WriteString(s[i : i+j])
		i += j
		if s[i] == '\\' {
			// \$NAME is a literal $NAME; any other backslash is itself.
			if n := shellName(s, i+1); n > 0 {
				b.WriteString(s[i+1 : i+1+n])
				i += 1 + n
			} else {
				b.WriteByte('\\')
				i++
			}
			continue
		}
		run := len(s[i:]) - len(strings.TrimLeft(s[i:], "$"))
		next := i + run
		switch {
		case run > 1 && next < len(s) && s[next] == '{':
			// $${ is a literal ${.
			b.WriteString(s[i : next-1])
			b.WriteByte('{')
			i = next + 1
		case run > 1:
			// $$ROOT, $$NOW: MongoDB variables, written as they are.
			b.WriteString(s[i:next])
			i = next
		case next < len(s) && s[next] == '{':
			i = x.reference(s, i, &b, &r, secret, problem)
		default:
			if n := shellName(s, i); n > 0 {
				name := s[i+1 : i+n]
				if secret {
					problem("the value holds $ followed by an upper-case name, which looks like a shell variable; sluice does not expand those: write ${env:NAME} for an environment variable, or \\$ before the name for a literal $")
				} else {
					problem("%s looks like a shell variable, which sluice does not expand: write ${env:%s} for the environment variable, or \\%s for the literal text",
						"$"+truncate(name, 40), truncate(name, 40), "$"+truncate(name, 40))
				}
				b.WriteString(s[i : i+n])
				i += n
				continue
			}
			b.WriteByte('$')
			i++
		}
	}
	if b.Len() > limit {
		r.over = true
	}
	r.out = b.String()
	return r
}

// shellName returns the length of "$NAME" at s[i] when it looks like a shell variable (see expand), else 0.
func shellName(s string, i int) int {
	if i >= len(s) || s[i] != '$' {
		return 0
	}
	j, letter := i+1, false
	for ; j < len(s); j++ {
		c := s[j]
		switch {
		case c >= 'A' && c <= 'Z':
			letter = true
		case c == '_' || c >= '0' && c <= '9' && j > i+1:
		case c >= 'a' && c <= 'z' || c >= '0' && c <= '9':
			return 0 // $Word, $5: not a shell variable's look
		default:
			if letter {
				return j - i
			}
			return 0
		}
	}
	if letter {
		return j - i
	}
	return 0
}

// reference expands the reference starting with "${" at s[i] into b and returns the index after it.
func (x *expander) reference(s string, i int, b *strings.Builder, r *scan, secret bool, problem func(string, ...any)) int {
	rest := s[i+2:]
	end := strings.IndexByte(rest, '}')
	after := len(s)
	if end >= 0 {
		after = i + 2 + end + 1
	}
	const escape = "write $${ for a literal ${"
	m := schemeRE.FindString(rest)
	if m == "" {
		switch {
		case end >= 0 && nameRE.MatchString(rest[:end]) && !secret:
			name := truncate(rest[:end], 40)
			problem("${%s} is not a reference: write ${env:%s} for the environment variable %s, or $${%s} for the literal text", name, name, name, name)
		case end >= 0 && nameRE.MatchString(rest[:end]):
			problem("the value holds ${NAME}, which is not a reference: write ${env:NAME} for an environment variable; %s", escape)
		default:
			problem("${ starts a reference, ${env:NAME} or ${file:PATH}; %s", escape)
		}
		return after
	}
	scheme := m[:len(m)-1]
	if scheme != "env" && scheme != "file" {
		what := fmt.Sprintf("%q in ${%s:…}", truncate(scheme, 20), truncate(scheme, 20))
		if secret {
			what = "in the value"
		}
		problem("unknown reference scheme %s: the schemes are %s (${env:NAME}, ${file:PATH}); %s", what, joinAnd(schemes), escape)
		return after
	}
	r.refs = true
	if end < 0 {
		problem("unterminated reference ${%s:…: add the closing '}'", scheme)
		return after
	}
	arg := rest[len(m):end]
	ref := "${" + scheme + ":" + truncate(arg, 60) + "}"
	if arg == "" {
		problem("empty reference %s: want ${env:NAME} or ${file:PATH}", ref)
		return after
	}
	var (
		val string
		err error
	)
	switch {
	case x.keep:
		val = s[i:after]
	case scheme == "env":
		val, err = x.env(arg)
	default:
		val, err = x.file(arg)
	}
	if err != nil {
		problem("%s: %v", ref, err)
		return after
	}
	if !x.keep {
		r.values = append(r.values, val)
	}
	b.WriteString(val)
	return after
}

func (x *expander) env(name string) (string, error) {
	lookup := x.lookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	v, ok := lookup(name)
	if !ok {
		return "", fmt.Errorf("environment variable %s is not set", truncate(name, 60))
	}
	return v, nil
}

// file reads the file a ${file:…} reference names, at most MaxValueBytes of it.
func (x *expander) file(name string) (string, error) {
	path := name
	if !filepath.IsAbs(path) {
		path = filepath.Join(x.dir, path)
	}
	shown := truncate(path, 80)
	f, err := os.Open(path)
	if err == nil {
		defer f.Close()
		var data []byte
		// Read one byte more than a value may hold with its trailing "\r\n", to tell when there is more.
		data, err = io.ReadAll(io.LimitReader(f, MaxValueBytes+3))
		if err == nil {
			s, trimmed := strings.CutSuffix(string(data), "\n")
			if trimmed {
				s = strings.TrimSuffix(s, "\r")
			}
			if len(data) > MaxValueBytes+2 || len(s) > MaxValueBytes {
				return "", fmt.Errorf("file %s is larger than %s, the limit for a setting value", shown, sizeText(MaxValueBytes))
			}
			return s, nil
		}
	}
	var pe *fs.PathError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("file %s does not exist", shown)
	case errors.As(err, &pe):
		return "", fmt.Errorf("cannot read file %s: %v", shown, pe.Err)
	}
	return "", fmt.Errorf("cannot read file %s: %v", shown, err)
}

// sizeText writes a byte count for messages: "1 MiB", "1536 bytes".
func sizeText(n int) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}
