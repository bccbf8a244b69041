// The router's tokenizer: loading a model dir's tokenizer files and EOS ids.
export { loadTokenizer, RouterTokenizer, type LoadedTokenizer } from "./tokenizer.js";
export { TokenizerLoadError } from "./files.js";
export { loadEosTokenIds } from "./eos.js";
