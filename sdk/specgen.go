package sdk

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"
)

// SettingsOf derives a stage's settings from the fields of the struct type T, its config struct: one
// declaration per setting, from which the spec, the defaults and Settings.Decode all come.
//
// A field is a setting when it has a `setting:"name"` tag; the other tags declare the rest:
//
//	type Config struct {
//		URL     string        `setting:"url,required" doc:"Where to send records."`
//		Token   string        `setting:"token,secret" doc:"The bearer token. Write it as ${env:NAME}."`
//		Timeout time.Duration `setting:"timeout" default:"10s" min:"1ms" doc:"How long one request may take."`
//		Mode    string        `setting:"mode" default:"append" enum:"append,replace" doc:"How to write."`
//		sdk.TLS `setting:",squash"` // a group of settings (here the shared TLS settings), inlined
//	}
//
// The options after the name are required and secret. default, min and max are written as in a
// connector file ("1024", "0.5", "5s", "true"); enum lists the allowed values, separated by commas; doc
// says what the setting does. The type follows from the field's Go type: string, bool, any integer
// (int), float32 or float64 (float), time.Duration (duration), a slice or array (list), a map or struct
// (object); a `type:"…"` tag sets it for other fields (an interface). A struct embedded with
// `setting:",squash"` contributes its settings in place. Fields without a setting tag, or tagged
// `setting:"-"`, are not settings. Settings keep the fields' order.
//
// Spec.Validate checks the result further (names, docs, defaults within bounds).
func SettingsOf[T any]() ([]Setting, error) {
	return settingsOf(reflect.TypeFor[T]())
}

// MustSettingsOf is SettingsOf for a spec declared at package level: it panics on a malformed tag,
// which the plugin's first test reports.
func MustSettingsOf[T any]() []Setting {
	s, err := SettingsOf[T]()
	if err != nil {
		panic(err)
	}
	return s
}

var derived sync.Map // reflect.Type → derivation

type derivation struct {
	settings []Setting
	err      error
}

// settingsOf derives the settings of struct type t (or a pointer to one), memoised per type.
func settingsOf(t reflect.Type) ([]Setting, error) {
	if d, ok := derived.Load(t); ok {
		return d.(derivation).settings, d.(derivation).err
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var s []Setting
	var err error
	if t.Kind() != reflect.Struct {
		err = fmt.Errorf("sdk: settings are declared by a struct, not %s", t)
	} else {
		s, err = appendFields(nil, t, t.Name())
	}
	derived.Store(t, derivation{s, err})
	return s, err
}

func appendFields(out []Setting, t reflect.Type, path string) ([]Setting, error) {
	var errs []error
	for f := range t.Fields() {
		tag, ok := f.Tag.Lookup("setting")
		if !ok || tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		where := path + "." + f.Name
		var required, secret, squash bool
		for o := range strings.SplitSeq(opts, ",") {
			switch o {
			case "":
			case "required":
				required = true
			case "secret":
				secret = true
			case "squash":
				squash = true
			case "omitempty", "omitzero", "remain":
				errs = append(errs, fmt.Errorf("%s: option %q has no meaning for a setting", where, o))
			default:
				errs = append(errs, fmt.Errorf("%s: unknown option %q in its setting tag (want required, secret or squash)", where, o))
			}
		}
		if squash {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() != reflect.Struct || name != "" {
				errs = append(errs, fmt.Errorf("%s: squash inlines an embedded struct: tag it `setting:\",squash\"`", where))
				continue
			}
			var err error
			out, err = appendFields(out, ft, where)
			errs = append(errs, err)
			continue
		}
		if name == "" {
			errs = append(errs, fmt.Errorf("%s: setting tag without a name", where))
			continue
		}
		st := Setting{
			Name: name, Required: required, Secret: secret,
			Default: f.Tag.Get("default"), Min: f.Tag.Get("min"), Max: f.Tag.Get("max"), Doc: f.Tag.Get("doc"),
		}
		if e := f.Tag.Get("enum"); e != "" {
			st.Enum = strings.Split(e, ",")
		}
		if ty, ok := f.Tag.Lookup("type"); ok {
			st.Type = Type(ty)
		} else if st.Type = typeOf(f.Type); st.Type == "" {
			errs = append(errs, fmt.Errorf("%s: no setting type for Go type %s: add a type tag", where, f.Type))
			continue
		}
		out = append(out, st)
	}
	return out, errors.Join(errs...)
}

// typeOf is the setting type of Go type t, or "" when there is none.
func typeOf(t reflect.Type) Type {
	if t == reflect.TypeFor[time.Duration]() {
		return TypeDuration
	}
	switch t.Kind() {
	case reflect.String:
		return TypeString
	case reflect.Bool:
		return TypeBool
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return TypeInt
	case reflect.Float32, reflect.Float64:
		return TypeFloat
	case reflect.Slice, reflect.Array:
		return TypeList
	case reflect.Map, reflect.Struct:
		return TypeObject
	case reflect.Pointer:
		return typeOf(t.Elem())
	}
	return ""
}
