// Validation failures. Shape errors (the body does not fit GenerateRequest) and
// rule errors (TGI's ValidationError) are both HTTP 422 with error_type
// "validation"; TGI sends shape errors as text/plain from axum, we keep its JSON.
import { InferError } from "../infer/types.js";

/** TGI's ValidationError, displayed as "Input validation error: {message}". */
export function validationError(message: string): InferError {
  return new InferError("validation", `Input validation error: ${message}`);
}

/** The body is JSON but not a GenerateRequest; message in the form of serde's. */
export function shapeError(path: string, message: string): InferError {
  const where = path === "" ? "" : `${path}: `;
  return new InferError("validation", `Failed to deserialize the JSON body into the target type: ${where}${message}`);
}
