/**
 * "Conversation settings": the model picker (filled from GET /models) and the
 * system prompt of the open conversation, both saved with PATCH
 * /conversations/{id}. Picking a model with no conversation open starts one
 * with that model. The transcript's `model` and `system` fill them in
 * (showConversationSettings, called when a transcript is rendered).
 */

import { conversationPath, RequestFailed, requestJson } from "./api.js";
import { chat, learnModelLabel } from "./chat-state.js";
import { createConversation } from "./conversations.js";
import { ui } from "./dom.js";
import { serverUrl } from "./settings.js";

/** The server whose models fill the picker (they are fetched again for another one). */
let modelsOf = null;
/** The server's default model id, for a conversation not yet open. */
let defaultModel = null;
/** A PATCH in flight: a transcript fetched meanwhile must not undo the picker. */
let saving = 0;

/** Say `text` next to the settings (role=status); "" hides it. */
function say(text, failed = false) {
  ui.chatSettingsStatus.textContent = text;
  ui.chatSettingsStatus.hidden = text === "";
  ui.chatSettingsStatus.classList.toggle("error", failed);
}

/** Fill the model picker from GET /models, once per server. */
export async function loadModels() {
  if (modelsOf === serverUrl) return;
  const server = serverUrl;
  let listing;
  try {
    listing = await requestJson("GET", "/models");
  } catch (err) {
    if (!(err instanceof RequestFailed)) throw err;
    say(`Could not list the models: ${err.message}`, true);
    return;
  }
  if (server !== serverUrl || listing === null || !Array.isArray(listing.models)) return;
  modelsOf = server;
  defaultModel = typeof listing.default === "string" ? listing.default : null;
  const chosen = ui.chatModel.value;
  const options = [];
  for (const model of listing.models) {
    if (model === null || typeof model.id !== "string") continue;
    const label = typeof model.label === "string" && model.label !== "" ? model.label : model.id;
    learnModelLabel(model.id, label);
    const option = document.createElement("option");
    option.value = model.id;
    option.textContent = label; // textContent: labels come from the upstream
    options.push(option);
  }
  ui.chatModel.replaceChildren(...options);
  ui.chatModel.disabled = options.length < 2;
  ui.chatModel.value = chosen !== "" && options.some((o) => o.value === chosen) ? chosen : (defaultModel ?? "");
}

/** Show the settings a fetched transcript holds (unless a change of ours is being saved). */
export function showConversationSettings(transcript) {
  loadModels();
  if (saving > 0) return;
  if (typeof transcript.model === "string") selectModel(transcript.model);
  if (typeof transcript.system === "string" && document.activeElement !== ui.chatSystem) {
    ui.chatSystem.value = transcript.system;
  }
}

/** A `settings` event: this conversation's model or prompt changed (here or in another tab). */
export function onSettingsEvent(event) {
  let payload;
  try {
    payload = JSON.parse(event.data);
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
    return;
  }
  if (payload !== null && typeof payload === "object") showConversationSettings(payload);
}

/** No conversation open: the default model, no system prompt. */
export function clearConversationSettings() {
  if (defaultModel !== null) selectModel(defaultModel);
  ui.chatSystem.value = "";
  say("");
}

/** Pick `id` in the select, adding it if the list lacks it (a model no longer offered). */
function selectModel(id) {
  if (![...ui.chatModel.options].some((o) => o.value === id)) {
    const option = document.createElement("option");
    option.value = id;
    option.textContent = chat.modelLabels.get(id) ?? id;
    ui.chatModel.append(option);
  }
  ui.chatModel.value = id;
}

/** PATCH the open conversation (opening one first if none is); the answer, or null. */
async function save(changes) {
  saving += 1;
  try {
    if (chat.conversationId === null && (await createConversation()) === null) return null;
    const answer = await requestJson("PATCH", conversationPath(chat.conversationId), changes);
    if (typeof answer?.model === "string") selectModel(answer.model);
    if (typeof answer?.system === "string") ui.chatSystem.value = answer.system;
    return answer;
  } catch (err) {
    if (!(err instanceof RequestFailed)) throw err;
    say(`Not saved: ${err.message}`, true);
    return null;
  } finally {
    saving -= 1;
  }
}

async function onModelPicked() {
  const model = ui.chatModel.value;
  if ((await save({ model })) !== null) say(`Replies now come from ${chat.modelLabels.get(model) ?? model}.`);
}

async function onSystemSaved(event) {
  event.preventDefault();
  ui.chatSystemSave.disabled = true;
  try {
    const answer = await save({ system: ui.chatSystem.value });
    if (answer !== null) say(answer.system === "" ? "No system prompt." : "System prompt saved.");
  } finally {
    ui.chatSystemSave.disabled = false;
  }
}

/** Wire the settings' controls; the models are listed when the panel first opens. */
export function wireChatSettings() {
  ui.chatModel.addEventListener("change", onModelPicked);
  ui.chatSystemForm.addEventListener("submit", onSystemSaved);
  ui.chatSystem.addEventListener("input", () => say(""));
  ui.chatSettings.addEventListener("toggle", () => {
    if (ui.chatSettings.open) loadModels();
  });
}
