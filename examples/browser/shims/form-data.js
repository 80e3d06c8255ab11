// The SDK imports the `form-data` package for uploads under Node; browsers have FormData.
export default globalThis.FormData;
