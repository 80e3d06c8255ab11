// The SDK needs only `fromByteArray` from the `base64-js` package; btoa covers it.
export function fromByteArray(bytes) {
  let binary = '';
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary);
}
