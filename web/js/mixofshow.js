// Front-end entry of the Mix-of-Show pack: the only file that imports the host's app module.
import { app } from "../../scripts/app.js";

const CONCEPT_WORD = /<[^<>\s]+>/g;

// The ED-LoRA Text Encode node's context menu lists the concept words its prompt uses.
app.registerExtension({
  name: "MixOfShow.Core",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "EDLoRATextEncode") return;
    const original = nodeType.prototype.getExtraMenuOptions;
    nodeType.prototype.getExtraMenuOptions = function (canvas, options) {
      const result = original?.apply(this, arguments);
      const text = this.widgets?.find((w) => w.name === "text")?.value ?? "";
      const words = [...new Set(text.match(CONCEPT_WORD) ?? [])];
      options.unshift({ content: `Concept words: ${words.join(" ") || "none"}`, disabled: true });
      return result;
    };
  },
});
