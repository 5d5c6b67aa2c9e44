package events

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"strconv"
	"strings"
	"sync"
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
	// macs pools HMAC states per key id: a register computes two or three
	// MACs, and a fresh HMAC-SHA256 costs five allocations and the key's
	// two pad blocks.
	macs map[string]*sync.Pool
}

// hmac returns an HMAC-SHA256 state under key id, reset, and the function
// that gives it back; the caller must not use it after that.
func (k *Keyring) hmac(id string) (hash.Hash, func()) {
	pool := k.macs[id]
	h := pool.Get().(hash.Hash)
	return h, func() { h.Reset(); pool.Put(h) }
}

// ParseKeyring parses CODE_ENCRYPTION_KEYS: "id:base64key,id2:base64key2",
// each key 32 bytes in standard or URL-safe base64. Errors name the entry by
// position and id, never the key material.
func ParseKeyring(s string) (*Keyring, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("no code encryption key: set CODE_ENCRYPTION_KEYS (id:base64key,...; `countersign keygen` prints one)")
	}
	k := &Keyring{aeads: map[string]cipher.AEAD{}, macKeys: map[string][]byte{}, macs: map[string]*sync.Pool{}}
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
		k.macs[id] = &sync.Pool{New: func() any { return hmac.New(sha256.New, macKey) }}
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

// Seal encrypts code for the user_account_created event whose data is d
// (d.EncryptedCode is ignored; put the result there). Every field of d that
// the verification mail shows or relies on is bound in as additional data,
// with the key id: user id, normalized address, first and last name, and
// expires_at (to the microsecond). An event edited after sealing (a name
// changed, the expiry pushed back, the code moved to another user or
// address) no longer opens, so a replay with edits is dead-lettered
// instead of mailed.
func (k *Keyring) Seal(code string, d UserAccountCreated) (SealedCode, error) {
	id := k.ids[0]
	aead := k.aeads[id]
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return SealedCode{}, fmt.Errorf("seal code: %w", err)
	}
	return SealedCode{
		KeyID:      id,
		Nonce:      nonce,
		Ciphertext: aead.Seal(nil, nonce, []byte(code), sealData(id, d)),
	}, nil
}

// Open decrypts d.EncryptedCode, checking it was sealed for exactly d's
// user id, address, names and expiry (see Seal). Any failure is
// ErrCodeNotOpened (wrapped), with nothing of the code, the address or the
// names in it.
func (k *Keyring) Open(d UserAccountCreated) (string, error) {
	s := d.EncryptedCode
	aead, ok := k.aeads[s.KeyID]
	if !ok {
		return "", fmt.Errorf("%w: unknown key id %q", ErrCodeNotOpened, truncate(s.KeyID))
	}
	if len(s.Nonce) != aead.NonceSize() {
		return "", fmt.Errorf("%w: nonce is %d bytes, want %d", ErrCodeNotOpened, len(s.Nonce), aead.NonceSize())
	}
	plain, err := aead.Open(nil, s.Nonce, s.Ciphertext, sealData(s.KeyID, d))
	if err != nil {
		return "", fmt.Errorf("%w: authentication failed (wrong key, or the event was edited after sealing)", ErrCodeNotOpened)
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

// sealData is the additional data of a sealed code (version 2): the key id
// and the fields of the event that the mail shows or relies on. Each field
// is length-prefixed, so no choice of values (a NUL or a separator inside a
// name, say) can make two different events share a binding.
func sealData(keyID string, d UserAccountCreated) []byte {
	const prefix = "countersign/code/v2"
	var buf [24]byte
	expires := strconv.AppendInt(buf[:0], d.ExpiresAt.UnixMicro(), 10)
	email := NormalizeEmail(d.Email)
	b := make([]byte, 0, len(prefix)+6*4+len(keyID)+len(d.UserID)+len(email)+len(d.FirstName)+len(d.LastName)+len(expires))
	b = append(b, prefix...)
	for _, f := range [...]string{keyID, d.UserID, email, d.FirstName, d.LastName} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(expires)))
	return append(b, expires...)
}

// macData is what CodeMAC binds besides the code. It is the first version of
// the seal's additional data and stays as it is: pending stores hold MACs
// made with it, and a change would void every pending code at an upgrade.
func macData(keyID, userID, email string) []byte {
	return purposeData("countersign/code/v1", keyID, userID, email)
}

func purposeData(purpose, keyID, userID, email string) []byte {
	// NUL cannot occur in any of the three, so the encoding is unambiguous.
	email = NormalizeEmail(email)
	b := make([]byte, 0, len(purpose)+len(keyID)+len(userID)+len(email)+3)
	b = append(append(b, purpose...), 0)
	b = append(append(b, keyID...), 0)
	b = append(append(b, userID...), 0)
	return append(b, email...)
}

// linkPurpose separates link tokens from codes: a sealed code moved into
// encrypted_link_token (or back) does not open, and a link token's MAC is
// never a code's.
const linkPurpose = "countersign/link/v1"

// SealLinkToken seals a verification link's token for one user and
// address, like Seal, under its own additional data.
func (k *Keyring) SealLinkToken(token, userID, email string) (SealedCode, error) {
	return k.sealFor(linkPurpose, token, userID, email)
}

// OpenLinkToken opens what SealLinkToken sealed; failures are
// ErrCodeNotOpened, wrapped, with nothing of the token in them.
func (k *Keyring) OpenLinkToken(s SealedCode, userID, email string) (string, error) {
	return k.openFor(linkPurpose, s, userID, email)
}

// storedPurpose separates the copy of a code a pending store keeps (so
// that the same code can be mailed again while it lives) from the codes in
// events: neither opens as the other.
const storedPurpose = "countersign/stored-code/v1"

// SealStored seals a code for a pending store, bound to the address (the
// store, not the caller, decides the user id). Only the user API opens it,
// to mail the same code again; a dump of the store yields no code.
func (k *Keyring) SealStored(code, email string) (SealedCode, error) {
	return k.sealFor(storedPurpose, code, "", email)
}

// OpenStored opens what SealStored sealed; failures are ErrCodeNotOpened.
func (k *Keyring) OpenStored(s SealedCode, email string) (string, error) {
	return k.openFor(storedPurpose, s, "", email)
}

func (k *Keyring) sealFor(purpose, plain, userID, email string) (SealedCode, error) {
	id := k.ids[0]
	aead := k.aeads[id]
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return SealedCode{}, fmt.Errorf("seal: %w", err)
	}
	return SealedCode{
		KeyID:      id,
		Nonce:      nonce,
		Ciphertext: aead.Seal(nil, nonce, []byte(plain), purposeData(purpose, id, userID, email)),
	}, nil
}

func (k *Keyring) openFor(purpose string, s SealedCode, userID, email string) (string, error) {
	aead, ok := k.aeads[s.KeyID]
	if !ok {
		return "", fmt.Errorf("%w: unknown key id %q", ErrCodeNotOpened, truncate(s.KeyID))
	}
	if len(s.Nonce) != aead.NonceSize() {
		return "", fmt.Errorf("%w: nonce is %d bytes, want %d", ErrCodeNotOpened, len(s.Nonce), aead.NonceSize())
	}
	plain, err := aead.Open(nil, s.Nonce, s.Ciphertext, purposeData(purpose, s.KeyID, userID, email))
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
		h, done := k.hmac(id)
		h.Write([]byte(linkPurpose + "\x00" + id + "\x00"))
		h.Write([]byte(token))
		out = append(out, h.Sum(nil))
		done()
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

// CodeMACs returns the CodeMAC of code under every MAC key the keyring
// holds, by key id: what a store compares with a record's MAC of any key
// still held, in the same atomic step as the attempt's outcome (the user
// API's Store.Check). Its cost does not depend on the record.
func (k *Keyring) CodeMACs(code, userID, email string) map[string][]byte {
	out := make(map[string][]byte, len(k.ids))
	for _, id := range k.ids {
		out[id] = k.mac(id, code, userID, email)
	}
	return out
}

func (k *Keyring) mac(keyID, code, userID, email string) []byte {
	h, done := k.hmac(keyID)
	defer done()
	h.Write(macData(keyID, userID, email))
	h.Write([]byte{0})
	h.Write([]byte(code))
	return h.Sum(nil)
}
