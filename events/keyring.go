package events

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// KeySize is the length of a code encryption key: AES-256.
const KeySize = 32

// ErrCodeNotOpened is returned by Keyring.Open for a sealed code that cannot be
// opened: unknown key id, wrong key, tampered ciphertext, or a ciphertext moved
// to another user or address.
var ErrCodeNotOpened = errors.New("sealed code cannot be opened")

// Keyring seals and opens verification codes with AES-256-GCM. The first key
// seals; every key opens, so keys can be rotated: put the new key first, keep
// the old one until every event sealed with it has expired.
//
// A Keyring never prints its keys: String and LogValue show only the ids.
type Keyring struct {
	ids     []string
	aeads   map[string]cipher.AEAD
	macKeys map[string][]byte
}

// ParseKeyring parses CODE_ENCRYPTION_KEYS: "id:base64key,id2:base64key2",
// each key 32 bytes in standard or URL-safe base64. Errors name the entry by
// position and id, never the key material.
func ParseKeyring(s string) (*Keyring, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("no code encryption key: set CODE_ENCRYPTION_KEYS (id:base64key,...; `countersign keygen` prints one)")
	}
	k := &Keyring{aeads: map[string]cipher.AEAD{}, macKeys: map[string][]byte{}}
	for i, entry := range strings.Split(s, ",") {
		id, b64, ok := strings.Cut(strings.TrimSpace(entry), ":")
		id = strings.TrimSpace(id)
		if !ok || id == "" {
			return nil, fmt.Errorf("CODE_ENCRYPTION_KEYS entry %d: want id:base64key", i+1)
		}
		if _, dup := k.aeads[id]; dup {
			return nil, fmt.Errorf("CODE_ENCRYPTION_KEYS entry %d: duplicate key id %q", i+1, id)
		}
		key, err := decodeKey(strings.TrimSpace(b64))
		if err != nil {
			return nil, fmt.Errorf("CODE_ENCRYPTION_KEYS entry %d (id %q): %w", i+1, id, err)
		}
		aead, err := newAEAD(key)
		if err != nil {
			return nil, fmt.Errorf("CODE_ENCRYPTION_KEYS entry %d (id %q): %w", i+1, id, err)
		}
		// The MAC key is derived, not the encryption key itself, so the two
		// uses can never interact.
		macKey, err := hkdf.Key(sha256.New, key, nil, "countersign/code-mac/v1", 32)
		if err != nil {
			return nil, fmt.Errorf("CODE_ENCRYPTION_KEYS entry %d (id %q): derive MAC key: %w", i+1, id, err)
		}
		k.ids = append(k.ids, id)
		k.aeads[id] = aead
		k.macKeys[id] = macKey
	}
	return k, nil
}

func decodeKey(b64 string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if key, err := enc.DecodeString(b64); err == nil {
			if len(key) != KeySize {
				return nil, fmt.Errorf("key is %d bytes, want %d (AES-256)", len(key), KeySize)
			}
			return key, nil
		}
	}
	return nil, errors.New("key is not base64")
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	return cipher.NewGCM(block)
}

// GenerateKeyEntry returns a fresh random CODE_ENCRYPTION_KEYS entry
// ("id:base64key"); the id is derived from the current date so rotations sort.
func GenerateKeyEntry() (string, error) {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	suffix := make([]byte, 3)
	if _, err := rand.Read(suffix); err != nil {
		return "", fmt.Errorf("generate key id: %w", err)
	}
	id := fmt.Sprintf("k%s-%x", time.Now().UTC().Format("20060102"), suffix)
	return id + ":" + base64.StdEncoding.EncodeToString(key), nil
}

// NewRandomKeyring returns a keyring holding one fresh random key, for a
// single process (countersign dev) that both seals and opens.
func NewRandomKeyring() (*Keyring, error) {
	entry, err := GenerateKeyEntry()
	if err != nil {
		return nil, err
	}
	return ParseKeyring(entry)
}

// Seal encrypts code for one user and address. The user id, the normalized
// address and the key id are bound in as additional data, so the sealed code
// cannot be moved to another event.
func (k *Keyring) Seal(code, userID, email string) (SealedCode, error) {
	id := k.ids[0]
	aead := k.aeads[id]
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return SealedCode{}, fmt.Errorf("seal code: %w", err)
	}
	return SealedCode{
		KeyID:      id,
		Nonce:      nonce,
		Ciphertext: aead.Seal(nil, nonce, []byte(code), additionalData(id, userID, email)),
	}, nil
}

// Open decrypts a sealed code for the given user and address. Any failure is
// ErrCodeNotOpened (wrapped), with nothing of the code or the address in it.
func (k *Keyring) Open(s SealedCode, userID, email string) (string, error) {
	aead, ok := k.aeads[s.KeyID]
	if !ok {
		return "", fmt.Errorf("%w: unknown key id %q", ErrCodeNotOpened, truncate(s.KeyID))
	}
	if len(s.Nonce) != aead.NonceSize() {
		return "", fmt.Errorf("%w: nonce is %d bytes, want %d", ErrCodeNotOpened, len(s.Nonce), aead.NonceSize())
	}
	plain, err := aead.Open(nil, s.Nonce, s.Ciphertext, additionalData(s.KeyID, userID, email))
	if err != nil {
		return "", fmt.Errorf("%w: authentication failed", ErrCodeNotOpened)
	}
	return string(plain), nil
}

// KeyIDs returns the key ids, the sealing key first.
func (k *Keyring) KeyIDs() []string { return append([]string(nil), k.ids...) }

// String shows the key ids only. Value receivers, so that %v, %+v and %#v
// of a Keyring or a *Keyring never print key material (from which a
// 6-digit code could be brute-forced out of its MAC).
func (k Keyring) String() string { return "Keyring{" + strings.Join(k.ids, ",") + "}" }

// GoString is String, for %#v.
func (k Keyring) GoString() string { return k.String() }

// LogValue is String, for log/slog.
func (k Keyring) LogValue() slog.Value { return slog.StringValue(k.String()) }

func additionalData(keyID, userID, email string) []byte {
	return purposeData("countersign/code/v1", keyID, userID, email)
}

func purposeData(purpose, keyID, userID, email string) []byte {
	// NUL cannot occur in any of the three, so the encoding is unambiguous.
	return []byte(purpose + "\x00" + keyID + "\x00" + userID + "\x00" + NormalizeEmail(email))
}

// linkPurpose separates link tokens from codes: a sealed code moved into
// encrypted_link_token (or back) does not open, and a link token's MAC is
// never a code's.
const linkPurpose = "countersign/link/v1"

// SealLinkToken seals a verification link's token for one user and
// address, like Seal, under its own additional data.
func (k *Keyring) SealLinkToken(token, userID, email string) (SealedCode, error) {
	id := k.ids[0]
	aead := k.aeads[id]
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return SealedCode{}, fmt.Errorf("seal link token: %w", err)
	}
	return SealedCode{
		KeyID:      id,
		Nonce:      nonce,
		Ciphertext: aead.Seal(nil, nonce, []byte(token), purposeData(linkPurpose, id, userID, email)),
	}, nil
}

// OpenLinkToken opens what SealLinkToken sealed; failures are
// ErrCodeNotOpened, wrapped, with nothing of the token in them.
func (k *Keyring) OpenLinkToken(s SealedCode, userID, email string) (string, error) {
	aead, ok := k.aeads[s.KeyID]
	if !ok {
		return "", fmt.Errorf("%w: unknown key id %q", ErrCodeNotOpened, truncate(s.KeyID))
	}
	if len(s.Nonce) != aead.NonceSize() {
		return "", fmt.Errorf("%w: nonce is %d bytes, want %d", ErrCodeNotOpened, len(s.Nonce), aead.NonceSize())
	}
	plain, err := aead.Open(nil, s.Nonce, s.Ciphertext, purposeData(linkPurpose, s.KeyID, userID, email))
	if err != nil {
		return "", fmt.Errorf("%w: authentication failed", ErrCodeNotOpened)
	}
	return string(plain), nil
}

// LinkMACs returns the HMAC-SHA256 of a link token under every key, the
// sealing key's first: what a store keeps instead of the token, and what
// it is looked up by. The token is all the link carries, so unlike CodeMAC
// no address is bound in; a token has 128 random bits or more, so its MAC
// cannot be inverted by trying tokens. A lookup tries each MAC in turn, so
// links issued before a key rotation keep working while the old key stays.
func (k *Keyring) LinkMACs(token string) [][]byte {
	out := make([][]byte, 0, len(k.ids))
	for _, id := range k.ids {
		h := hmac.New(sha256.New, k.macKeys[id])
		h.Write([]byte(linkPurpose + "\x00" + id + "\x00"))
		h.Write([]byte(token))
		out = append(out, h.Sum(nil))
	}
	return out
}

// CodeMAC returns an HMAC-SHA256 of code for one user and address, keyed by a
// subkey derived (HKDF) from the sealing key, and that key's id. Stores keep
// the MAC, never the code: a dump of the pending store yields no usable
// code, and replicas sharing CODE_ENCRYPTION_KEYS compute the same MAC.
func (k *Keyring) CodeMAC(code, userID, email string) (keyID string, mac []byte) {
	keyID = k.ids[0]
	return keyID, k.mac(keyID, code, userID, email)
}

// VerifyCodeMAC reports, in constant time, whether mac is the CodeMAC of code
// under the key keyID. An unknown key id (rotated out) never verifies.
func (k *Keyring) VerifyCodeMAC(keyID string, mac []byte, code, userID, email string) bool {
	if _, ok := k.macKeys[keyID]; !ok {
		return false
	}
	return hmac.Equal(mac, k.mac(keyID, code, userID, email))
}

func (k *Keyring) mac(keyID, code, userID, email string) []byte {
	h := hmac.New(sha256.New, k.macKeys[keyID])
	h.Write(additionalData(keyID, userID, email))
	h.Write([]byte{0})
	h.Write([]byte(code))
	return h.Sum(nil)
}
