function Y = medalpy_reconstruct(model, X)
% MEDALPY_RECONSTRUCT  Reconstruct the rows of X with a network exported by medalpy.
%
%   Y = medalpy_reconstruct(model, X)
%
%   model  the struct `model` of a file written by `medalpy export MODEL --format mat OUT.mat`
%          (or that file's name)
%   X      N x D inputs, one sample per row, values in [0, 1] (uint8 images are divided by 255)
%   Y      N x D reconstructions
%
%   Each encoder maps h_{k-1} to h_k = sigmoid(h_{k-1} W' + b') (W is fan_out x fan_in, as
%   MEDAL stores it). The head then maps the top code back to the input: the direct decoder,
%   or the mirror of a stacked run's kept decoders, applied from the top down.
%   Computed in the model's precision (single or double). Works in MATLAB and GNU Octave.

  if ischar(model)
    loaded = load(model);
    model = loaded.model;
  end
  if isa(X, 'uint8')
    X = double(X) / 255;
  end
  H = cast(X, class(model.encoders{1}.W));
  for k = 1:numel(model.encoders)
    H = layer(model.encoders{k}, H);
  end
  switch model.head
    case 'decoder'
      if model.decoder_target ~= 0
        error('medalpy_reconstruct: the decoder reconstructs code level %d, not the input', ...
              model.decoder_target);
      end
      Y = layer(model.decoder, H);
    case 'mirror'
      % mirror{j}.level = i maps h_{i+1} back to h_i; apply levels K-1, ..., 0.
      levels = cellfun(@(m) m.level, model.mirror);
      for i = numel(model.encoders) - 1:-1:0
        H = layer(model.mirror{levels == i}, H);
      end
      Y = H;
    otherwise
      error('medalpy_reconstruct: a network with head ''%s'' does not reconstruct its input', ...
            model.head);
  end
end

function H = layer(L, H)
  H = 1 ./ (1 + exp(-(H * L.W.' + L.b.')));
end
