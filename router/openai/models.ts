// GET /v1/models: the one served model, in OpenAI's list shape.
import type { OpenAIContext } from "./generations.js";

export interface ModelList {
  object: "list";
  data: { id: string; object: "model"; created: number; owned_by: string }[];
}

export function modelList(ctx: Pick<OpenAIContext, "info">): ModelList {
  const id = ctx.info.modelId;
  return { object: "list", data: [{ id, object: "model", created: 0, owned_by: id }] };
}
